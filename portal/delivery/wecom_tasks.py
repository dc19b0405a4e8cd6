"""WeCom customer contact, the parts that run after sending: the per-customer results of the
mass-send tasks, read back into the ledger, and the sync of customers onto contacts.

    collect_task_results(api)    every minute (jobs.sending.collect_wecom_results): for each
                                 open task, the employee's state, then each customer's
                                 result: sent, not a friend (failed), over WeCom's limit
                                 (failed, wecom_limit); a task its employee never confirms
                                 is closed after wecom.confirm_days, its rest failed
    sync_customers(api)          jobs.audience.sync_wecom_customers: every employee's
                                 customers; a contact whose mobile matches a customer's
                                 remark mobile gets its external_userid and owner

Both are idempotent: a result already read changes nothing, a contact already linked stays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from portal.audience import normalise
from portal.audience.models import Contact
from portal.delivery.channels.base import Outcome
from portal.delivery.channels.wecom_customer import (
    RESULT_LIMITED,
    RESULT_NOT_FRIEND,
    RESULT_SENT,
    WeComCustomerApi,
)
from portal.delivery.models import AttemptOutcome, Delivery, DeliveryAttempt, DeliveryStatus, WeComTask
from portal.extensions import db
from portal.models_base import utcnow

# A task its employee has not confirmed after this long is closed: WeCom drops it too.
CONFIRM_DAYS = 3
# Employee state in get_groupmsg_task: 2 = sent.
TASK_SENT = 2

# Per-customer result -> (ledger status, result detail, history outcome).
_RESULTS = {
    RESULT_SENT: (DeliveryStatus.SENT, "", AttemptOutcome.ACCEPTED),
    RESULT_NOT_FRIEND: (DeliveryStatus.FAILED, "not_friend", AttemptOutcome.FAILED),
    RESULT_LIMITED: (DeliveryStatus.FAILED, "wecom_limit", AttemptOutcome.FAILED),
}


def collect_task_results(api: WeComCustomerApi, now: datetime | None = None) -> dict[str, int]:
    """Read the results of every open task into the ledger; returns counts."""
    now = now or utcnow()
    counts = {"tasks": 0, "sent": 0, "failed": 0, "closed": 0}
    tasks = list(db.session.scalars(select(WeComTask).where(WeComTask.done.is_(False)).order_by(WeComTask.id)))
    for task in tasks:
        counts["tasks"] += 1
        result, senders = api.task_senders(task.msgid)
        if not result.ok:
            if result.outcome in (Outcome.RETRY, Outcome.PAUSE):
                db.session.rollback()
                continue  # WeCom is busy or refuses us: next time
            senders = []
        confirmed = any(s.get("userid") == task.owner_userid and s.get("status") == TASK_SENT for s in senders)
        if confirmed:
            result, rows = api.send_results(task.msgid, task.owner_userid)
            if not result.ok:
                db.session.rollback()
                continue
            sent, failed = _apply_results(task, rows, now)
            counts["sent"] += sent
            counts["failed"] += failed
        task.checked_at = now
        if _submitted_count(task) == 0:
            task.done = True
        elif task.created_at < now - timedelta(days=CONFIRM_DAYS):
            counts["failed"] += _close_unconfirmed(task, now)
            task.done = True
            counts["closed"] += 1
        db.session.commit()
    return counts


def _task_deliveries(task: WeComTask) -> Any:
    return (
        select(Delivery.id, Delivery.attempts, Contact.wecom_external_userid)
        .join(Contact, Contact.id == Delivery.contact_id)
        .where(Delivery.step_id == task.step_id, Delivery.status == DeliveryStatus.SUBMITTED)
        .where(Contact.wecom_owner_userid == task.owner_userid)
    )


def _submitted_count(task: WeComTask) -> int:
    return len(db.session.execute(_task_deliveries(task)).all())


def _apply_results(task: WeComTask, rows: list[dict[str, Any]], now: datetime) -> tuple[int, int]:
    waiting = {r.wecom_external_userid: r for r in db.session.execute(_task_deliveries(task))}
    changes: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    sent = failed = 0
    for row in rows:
        delivery = waiting.pop(str(row.get("external_userid") or ""), None)
        mapped = _RESULTS.get(row.get("status"))
        if delivery is None or mapped is None:
            continue  # not ours, already read, or not sent yet
        status, detail, outcome = mapped
        when = row.get("send_time")
        sent_at = datetime.fromtimestamp(int(when), UTC) if when and status == DeliveryStatus.SENT else None
        changes.append(
            {
                "id": delivery.id,
                "status": status,
                "sent_at": sent_at or (now if status == DeliveryStatus.SENT else None),
                "result_code": None,
                "result_detail": detail,
                "result_message": "",
            }
        )
        history.append(
            {
                "delivery_id": delivery.id,
                "attempt": delivery.attempts,
                "outcome": outcome.value,
                "code": None,
                "detail": detail,
                "message": "",
                "occurred_at": now,
            }
        )
        if status == DeliveryStatus.SENT:
            sent += 1
        else:
            failed += 1
    if changes:
        db.session.execute(update(Delivery), changes)
        db.session.execute(insert(DeliveryAttempt), history)
    return sent, failed


def _close_unconfirmed(task: WeComTask, now: datetime) -> int:
    rows = db.session.execute(_task_deliveries(task)).all()
    if not rows:
        return 0
    db.session.execute(
        update(Delivery),
        [
            {"id": r.id, "status": DeliveryStatus.FAILED, "result_detail": "not_confirmed", "result_message": ""}
            for r in rows
        ],
    )
    db.session.execute(
        insert(DeliveryAttempt),
        [
            {
                "delivery_id": r.id,
                "attempt": r.attempts,
                "outcome": AttemptOutcome.FAILED.value,
                "code": None,
                "detail": "not_confirmed",
                "message": "",
                "occurred_at": now,
            }
            for r in rows
        ],
    )
    return len(rows)


def sync_customers(api: WeComCustomerApi) -> dict[str, int]:
    """Link contacts to WeCom customers by mobile (the employee's remark mobiles of the
    customer); a contact already linked gets its owner brought up to date. Returns counts."""
    counts = {"customers": 0, "linked": 0}
    result, employees = api.follow_users()
    if not result.ok:
        raise RuntimeError(f"WeCom refused the follow-user list: {result.detail} {result.message}".strip())
    for page_result, page in api.customers(employees):
        if not page_result.ok:
            raise RuntimeError(f"WeCom refused the customer list: {page_result.detail} {page_result.message}".strip())
        for item in page:
            external = (item.get("external_contact") or {}).get("external_userid")
            follow = item.get("follow_info") or {}
            owner = follow.get("userid")
            if not external or not owner:
                continue
            counts["customers"] += 1
            mobiles = []
            for raw in follow.get("remark_mobiles") or []:
                try:
                    mobiles.append(normalise.mobile(str(raw)))
                except normalise.InvalidValue:
                    continue
            linked = db.session.execute(
                update(Contact)
                .where(Contact.wecom_external_userid == external)
                .values(wecom_owner_userid=owner)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not linked and mobiles:
                linked = db.session.execute(
                    update(Contact)
                    .where(Contact.mobile.in_([m for m in mobiles if m]), Contact.wecom_external_userid == "")
                    .values(wecom_external_userid=external, wecom_owner_userid=owner)
                    .execution_options(synchronize_session=False)
                ).rowcount
            counts["linked"] += linked
        db.session.commit()
    return counts
