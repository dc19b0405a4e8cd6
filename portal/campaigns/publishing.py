"""Test sends, the audience preview, and the publish gate.

A campaign is published only by someone holding campaign.publish, when it validates, and
when every message step has had a successful test send of its current content made after
the step last changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from portal import audit
from portal.access import Permission
from portal.audience import normalise
from portal.audience.segments import segment_query
from portal.campaigns.canvas import step_numbers
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep, StepKind, TestAddress, TestSend
from portal.campaigns.service import CampaignError, get, in_flow_order, validate, versions_to_test
from portal.extensions import db
from portal.models_base import utcnow
from portal.queue import TICK_QUEUE, JobRun, enqueue


def company_domains() -> list[str]:
    return [d.strip().lower() for d in current_app.config["COMPANY_EMAIL_DOMAINS"].split(",") if d.strip()]


def company_test_mobiles() -> list[str]:
    return [m.strip() for m in current_app.config["COMPANY_TEST_MOBILES"].split(",") if m.strip()]


def _company_mobile(number: str) -> bool:
    return any(
        number.startswith(allowed[:-1]) if allowed.endswith("*") else number == allowed
        for allowed in company_test_mobiles()
    )


def is_test_address(address: str) -> bool:
    """Whether `address` (as stored: normalised) is a company address under the current
    configuration; the worker asks again at send time."""
    if "@" in address:
        return address.rsplit("@", 1)[1].lower() in company_domains()
    return _company_mobile(address)


def add_test_address(actor: Any, raw: str) -> TestAddress:
    """Add an internal test address: an email at a company domain, or (for SMS and WeCom
    steps) a company mobile number."""
    raw = (raw or "").strip()
    try:
        if "@" in raw:
            address = normalise.email(raw)
            if not address or address.rsplit("@", 1)[1] not in company_domains():
                raise CampaignError("test_address_domain", domains=", ".join(company_domains()))
        else:
            address = normalise.mobile(raw)
            if not address or not _company_mobile(address):
                raise CampaignError("test_mobile_not_company")
    except normalise.InvalidValue as exc:
        raise CampaignError("invalid_test_address", value=raw) from exc
    row = db.session.scalar(select(TestAddress).where(TestAddress.user_id == actor.id, TestAddress.value == address))
    if row is None:
        row = TestAddress(user_id=actor.id, value=address)
        db.session.add(row)
        audit.record(actor, "test_address.added", f"user:{actor.id}", {"address": address})
        db.session.commit()
    return row


def remove_test_address(actor: Any, address_id: int) -> None:
    row = db.session.get(TestAddress, address_id)
    if row is None or row.user_id != actor.id:
        raise CampaignError("no_such_test_address")
    audit.record(actor, "test_address.removed", f"user:{actor.id}", {"address": row.value})
    db.session.delete(row)
    db.session.commit()


def test_addresses(user_id: int) -> list[TestAddress]:
    return list(db.session.scalars(select(TestAddress).where(TestAddress.user_id == user_id).order_by(TestAddress.id)))


def start_test_send(actor: Any, campaign_id: int, step_ids: list[int], contact_id: int | None = None) -> JobRun:
    """Queue test messages of the chosen message steps to each of the actor's test addresses;
    a worker sends them through the real channel."""
    if not actor.can(Permission.CAMPAIGN_TEST_SEND):
        raise CampaignError("may_not_test_send")
    campaign = get(campaign_id)
    addresses = test_addresses(actor.id)
    if not addresses:
        raise CampaignError("no_test_address")
    steps = [s for s in campaign.steps if s.id in set(step_ids) and s.kind == StepKind.MESSAGE]
    if not steps:
        raise CampaignError("choose_message_step")
    rows = []
    numbers = step_numbers(campaign)
    for step in steps:
        if step.content_version_id is None:
            raise CampaignError("step_without_content", number=numbers.get(step.id, 0))
        # Emails go to test email addresses; SMS and WeCom messages to test mobiles.
        wants_email = (step.channel or "email") == "email"
        recipients = [a.value for a in addresses if ("@" in a.value) == wants_email]
        if not recipients:
            code = "needs_test_email" if wants_email else "needs_test_mobile"
            raise CampaignError(code, number=numbers.get(step.id, 0))
        rows += [
            TestSend(
                campaign_id=campaign.id,
                step_id=step.id,
                content_version_id=version_id,
                requested_by_id=actor.id,
                recipient=recipient,
                contact_id=contact_id,
            )
            for version_id in versions_to_test(step)  # both variants of an A/B test
            for recipient in recipients
        ]
    db.session.add_all(rows)
    db.session.flush()
    audit.record(
        actor,
        "campaign.test_send",
        f"campaign:{campaign.id}",
        {"steps": [s.id for s in steps], "to": [a.value for a in addresses], "contact": contact_id},
    )
    db.session.commit()
    run = enqueue(
        "jobs.sending.send_test_messages",
        [r.id for r in rows],
        kind="test_send",
        actor=actor,
        queue="sending",
        timeout=300,
        retries=2,
    )
    for row in rows:
        row.job_run_id = run.id
    db.session.commit()
    return run


def test_history(campaign_id: int) -> list[TestSend]:
    return list(
        db.session.scalars(
            select(TestSend).where(TestSend.campaign_id == campaign_id).order_by(TestSend.id.desc()).limit(50)
        )
    )


def untested_steps(campaign: Campaign) -> list[CampaignStep]:
    """Message steps without a successful test send of their current content since they last changed."""
    missing = []
    for step in campaign.steps:
        if step.kind != StepKind.MESSAGE:
            continue
        proven = set(
            db.session.scalars(
                select(TestSend.content_version_id).where(
                    TestSend.step_id == step.id,
                    TestSend.status == "sent",
                    TestSend.created_at >= step.updated_at,
                )
            )
        )
        # Every version the step can send: A, and B of an A/B test.
        if not set(versions_to_test(step)) <= proven:
            missing.append(step)
    return missing


def audience_preview(campaign: Campaign, channel: str | None = None) -> dict[str, int]:
    """How many contacts would enter now, and how many are left out and why: the planner's
    own rules (consent, unsubscribed, suppressed, no address, frequency cap) on the segment,
    for the channel of the campaign's first message step."""
    from portal.delivery.planner import exclusion_counts, exclusion_reasons

    if channel is None:
        channel = next((s.channel or "email" for s in in_flow_order(campaign) if s.kind == StepKind.MESSAGE), "email")
    if campaign.segment_id is None:
        counts = dict.fromkeys(exclusion_reasons(channel), 0) | {"entering": 0}
    else:
        counts = exclusion_counts(segment_query(campaign.segment_id), channel, utcnow())
    counts["segment"] = sum(counts.values())
    counts["channel"] = channel  # type: ignore[assignment]
    return counts


class ResumeRefused(CampaignError):
    """A refused resume: `code` and `params` say why; the page makes the sentence."""

    def __init__(self, code: str, **params: Any) -> None:
        super().__init__(code)
        self.code, self.params = code, params


def _alert_pause(campaign: Campaign) -> tuple[str, dict[str, Any]] | None:
    """(code, params) of the alert that paused the campaign, None for a person's pause."""
    from portal.campaigns.monitoring import pause_details

    return pause_details(campaign.pause_reason) if campaign.status == CampaignStatus.PAUSED else None


def publish(actor: Any, campaign_id: int, start_at: datetime | None = None) -> Campaign:
    """The publish gate for a draft. Every refusal says everything that is missing. A paused
    campaign goes through `resume` (the same gate, audited as `campaign.resumed`; after an
    automatic pause it asks for the figures to be acknowledged)."""
    campaign = _through_gate(actor, campaign_id, start_at)
    audit.record(
        actor,
        "campaign.published",
        f"campaign:{campaign.id}",
        {"start_at": campaign.scheduled_at.isoformat(), "audience": audience_preview(campaign)},
    )
    db.session.commit()
    kick_runner()
    return campaign


def resume(
    actor: Any,
    campaign_id: int,
    acknowledged: bool,
    max_bounce_rate: str = "",
    min_delivery_rate: str = "",
    limits_reason: str = "",
) -> Campaign:
    """Resume a paused campaign through the publish gate. After an automatic pause the person
    must acknowledge the figures that tripped it; the alerts then judge only what settles from
    now on (a fresh start of at least alerts.min_attempts messages), against this campaign's
    own limits when given, with a reason. Audited as `campaign.resumed` with all of it."""
    from portal.campaigns.monitoring import resume_after_alert

    campaign = get(campaign_id)
    if campaign.status != CampaignStatus.PAUSED:
        raise ResumeRefused("not_paused")
    alert = _alert_pause(campaign)
    if alert is not None and not acknowledged:
        raise ResumeRefused("acknowledgement_required")
    limits = {
        "max_bounce_rate": _percent("max_bounce_rate", max_bounce_rate),
        "min_delivery_rate": _percent("min_delivery_rate", min_delivery_rate),
    }
    given = {name: value for name, value in limits.items() if value is not None}
    limits_reason = limits_reason.strip()
    if given and not limits_reason:
        raise ResumeRefused("limit_reason_required")
    campaign = _through_gate(actor, campaign_id, None, resuming=True)
    resume_after_alert(campaign.id, limits["max_bounce_rate"], limits["min_delivery_rate"], limits_reason)
    details: dict[str, Any] = {"acknowledged": bool(acknowledged) if alert else False, **given}
    if alert is not None:
        details["alert"] = {"code": alert[0], **alert[1]}
    if given:
        details["limits_reason"] = limits_reason
    audit.record(actor, "campaign.resumed", f"campaign:{campaign.id}", details)
    db.session.commit()
    kick_runner()
    return campaign


def _percent(name: str, raw: str) -> float | None:
    raw = (raw or "").strip().replace("%", "").replace("％", "")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ResumeRefused("limit_not_a_number", field=name, value=raw[:20]) from None
    if not 0 <= value <= 100:
        raise ResumeRefused("limit_out_of_range", field=name, value=raw[:20])
    return value


def _through_gate(actor: Any, campaign_id: int, start_at: datetime | None, resuming: bool = False) -> Campaign:
    """Schedule a draft or paused campaign when nothing is missing; not committed."""
    if not actor.can(Permission.CAMPAIGN_PUBLISH):
        raise CampaignError("may_not_publish")
    campaign = get(campaign_id)
    if campaign.status not in (CampaignStatus.DRAFT, CampaignStatus.PAUSED):
        raise CampaignError("not_publishable")
    if not resuming and campaign.status == CampaignStatus.PAUSED:
        # A paused campaign is resumed (its own action and audit event), never published again.
        raise ResumeRefused("use_resume")
    problems = [p.message for p in validate(campaign.id)]
    numbers = step_numbers(campaign)
    untested = [numbers.get(s.id, 0) for s in untested_steps(campaign)]
    if problems or untested:
        raise CampaignError("not_ready", problems=problems, untested=untested)
    now = utcnow()
    if start_at is None and not resuming:
        start_at = campaign.scheduled_at  # the start planned while configuring
    scheduled_at = start_at if start_at and start_at > now else now
    # Conditional on the status read above: of two clicks on Publish, only one goes through.
    changed = db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign.id, Campaign.status == campaign.status)
        .values(status=CampaignStatus.SCHEDULED, scheduled_at=scheduled_at, pause_reason="", updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not changed:
        db.session.rollback()
        raise CampaignError("published_already")
    db.session.refresh(campaign)
    return campaign


def kick_runner() -> None:
    """Run the campaign tick now rather than at its next interval, so that publishing and
    resuming take effect within seconds."""
    enqueue("jobs.sending.run_campaigns", kind="campaign_tick", queue=TICK_QUEUE, timeout=300, track=False)


# Which status each action leads from and to.
TRANSITIONS = {
    "pause": ((CampaignStatus.SCHEDULED, CampaignStatus.RUNNING), CampaignStatus.PAUSED),
    "cancel": (
        (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED),
        CampaignStatus.CANCELLED,
    ),
}


def change_status(actor: Any, campaign_id: int, action: str) -> Campaign:
    """Pause or cancel (resuming a paused campaign goes through the publish gate again)."""
    if action not in TRANSITIONS:
        raise CampaignError("unknown_status_action")
    if not actor.can(Permission.CAMPAIGN_EXECUTE):
        raise CampaignError("may_not_run")
    campaign = get(campaign_id)
    sources, target = TRANSITIONS[action]
    if campaign.status not in sources:
        raise CampaignError(f"A {campaign.status} campaign cannot be {target}.")
    before = campaign.status
    campaign.status = target
    details: dict[str, Any] = {"from": before, "to": target}
    if target == CampaignStatus.CANCELLED:
        from portal.campaigns.runner import cancel_campaign_work

        details.update(cancel_campaign_work(campaign.id))
    else:
        details.update(paused_figures(campaign.id))
    audit.record(actor, AUDIT_EVENTS[action], f"campaign:{campaign.id}", details)
    db.session.commit()
    return campaign


AUDIT_EVENTS = {"pause": "campaign.paused", "cancel": "campaign.cancel"}


def paused_figures(campaign_id: int) -> dict[str, int]:
    """What a pause holds: messages planned and not sent (they wait, nothing is lost),
    messages a sender holds right now (they finish: a pause stops senders at their next
    status check), and contacts waiting in the flow (they stay at their step)."""
    from sqlalchemy import func

    from portal.campaigns.models import Journey, JourneyStatus
    from portal.delivery.models import Delivery, DeliveryStatus

    pending, in_flight = db.session.execute(
        select(
            func.count(Delivery.id).filter(Delivery.status == DeliveryStatus.PENDING),
            func.count(Delivery.id).filter(Delivery.status == DeliveryStatus.SENDING),
        ).where(Delivery.campaign_id == campaign_id)
    ).one()
    waiting = db.session.scalar(
        select(func.count(Journey.id)).where(Journey.campaign_id == campaign_id, Journey.status == JourneyStatus.ACTIVE)
    )
    return {"pending": pending or 0, "in_flight": in_flight or 0, "waiting": waiting or 0}
