"""The sequence runner: starts campaigns when due, enrols contacts, and moves journeys
through the flow, in sets.

`run_due()` is called every few seconds by a periodic job. Each call is idempotent and safe
to overlap with another: enrolling and planning insert with ON CONFLICT DO NOTHING against
unique keys; moving a journey is a conditional UPDATE (`WHERE step_id = <this step>`), so
each journey leaves a step once; an action that must not run twice (score changes, owner
notifications) applies only to the journeys its own UPDATE moved (RETURNING).

Flow semantics:
    message   plan the step's deliveries (the ledger), move on at once
    delay     wait `days`/`hours` after arriving (relative_to "previous") or after entering
    branch    yes as soon as the condition holds (behaviour since the last message of the
              journey, or the score); no when the window has passed without it
    action    add/remove a tag, change the score, notify the contact's owner; move on
    exit      leave the campaign there; exit steps are also campaign-wide exit criteria
              (converted = an event of the given kind since entering; entered_segment)
A branch's paths end by rejoining the path after the branch; the end of the main path
completes the journey. Unsubscribed or suppressed contacts always leave the campaign, and
their pending deliveries are cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, delete, exists, func, literal, or_, select, update

from portal import audit
from portal.audience.models import Contact, ContactEvent, ContactTag, EventKind
from portal.audience.segments import segment_query
from portal.campaigns.models import (
    AbResult,
    Campaign,
    CampaignStatus,
    CampaignStep,
    Journey,
    JourneyStatus,
    StepKind,
)
from portal.campaigns.service import path
from portal.delivery.models import Delivery, DeliveryStatus
from portal.delivery.notices import queue_robot_notice
from portal.delivery.planner import insert_ignoring_duplicates, plan_step
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import notify

# Reasons a journey leaves before its end; its messages not yet sent are cancelled.
EXIT_CRITERIA = ("unsubscribed", "converted", "entered_segment")

BRANCH_EVENT_KINDS = {
    "opened": EventKind.EMAIL_OPEN,
    "clicked": EventKind.EMAIL_CLICK,
    "clicked_link": EventKind.EMAIL_CLICK,
    "form_submitted": EventKind.FORM_SUBMIT,
}


# -- the send window -----------------------------------------------------------------------------
def _clock(text: str) -> time:
    hours, _, minutes = text.partition(":")
    return time(int(hours), int(minutes))


def in_send_window(campaign: Campaign, now: datetime) -> bool:
    start, end = _clock(campaign.window_start), _clock(campaign.window_end)
    local_now = now.astimezone(ZoneInfo(campaign.timezone))
    # A window past midnight belongs to the day it opened on.
    opened_on = local_now - timedelta(days=1) if start > end and local_now.time() < end else local_now
    if str(opened_on.isoweekday()) not in (campaign.window_days or "1234567"):
        return False
    if start == end:
        return True
    local = local_now.time()
    return start <= local < end if start < end else (local >= start or local < end)


def next_send_time(campaign: Campaign, now: datetime) -> datetime:
    """`now` when it is inside the campaign's send window, else the window's next opening."""
    if in_send_window(campaign, now):
        return now
    zone = ZoneInfo(campaign.timezone)
    local = now.astimezone(zone)
    opening = datetime.combine(local.date(), _clock(campaign.window_start), tzinfo=zone)
    if opening <= local:
        opening += timedelta(days=1)
    # The next opening on a day of the week the window opens on.
    for _day in range(7):
        if str(opening.isoweekday()) in (campaign.window_days or "1234567"):
            break
        opening += timedelta(days=1)
    return opening.astimezone(now.tzinfo)


# -- the flow ------------------------------------------------------------------------------------
class Flow:
    """The campaign's steps with what follows each one (None: the end), and what to call
    once messages are planned."""

    def __init__(self, campaign: Campaign, on_planned: Callable[[int], Any] | None = None) -> None:
        self.on_planned = on_planned
        self.steps: dict[int, CampaignStep] = {s.id: s for s in campaign.steps}
        self.next: dict[int, int | None] = {}
        self.order: list[CampaignStep] = []
        # A branch's (yes, no) targets: the first step of each path, or what follows the branch.
        self.branch_targets: dict[int, tuple[int | None, int | None]] = {}
        self.first = self._walk(campaign, None, None, None)

    def _walk(self, campaign: Campaign, parent_id: int | None, branch: str | None, after: int | None) -> int | None:
        steps = path(campaign, parent_id, branch)
        for index, step in enumerate(steps):
            following = steps[index + 1].id if index + 1 < len(steps) else after
            self.next[step.id] = following
            self.order.append(step)
            if step.kind == StepKind.BRANCH:
                step_yes = self._walk(campaign, step.id, "yes", following)
                step_no = self._walk(campaign, step.id, "no", following)
                self.branch_targets[step.id] = (step_yes, step_no)
        return steps[0].id if steps else after


def _planned(flow: Flow, campaign_id: int) -> None:
    """Commit planned deliveries at once and tell the caller, so that senders start while the
    journeys are still being moved on (a repeated tick finds the rows there already)."""
    if flow.on_planned is not None:
        db.session.commit()
        flow.on_planned(campaign_id)


# -- journeys ------------------------------------------------------------------------------------
def _at(campaign_id: int, step_id: int, *conditions: Any) -> list[Any]:
    return [
        Journey.campaign_id == campaign_id,
        Journey.status == JourneyStatus.ACTIVE,
        Journey.step_id == step_id,
        *conditions,
    ]


def _move(
    campaign_id: int,
    step_id: int,
    target: int | None,
    now: datetime,
    *conditions: Any,
    returning: bool = False,
    **values: Any,
) -> Any:
    """Move the active journeys at `step_id` (and matching `conditions`) to `target`, or
    complete them when `target` is None. Returns the count, or the moved contact ids."""
    if target is None:
        values.update(status=JourneyStatus.COMPLETED, step_id=None, finished_at=now)
    else:
        values.update(step_id=target, arrived_at=now)
    statement = (
        update(Journey)
        .where(*_at(campaign_id, step_id, *conditions))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if returning:
        return [row[0] for row in db.session.execute(statement.returning(Journey.contact_id))]
    return db.session.execute(statement).rowcount


def _contacts_at(campaign_id: int, step_id: int, *conditions: Any):
    return select(Journey.contact_id).where(*_at(campaign_id, step_id, *conditions))


def enrol(campaign: Campaign, flow: Flow, now: datetime) -> None:
    """Add the contacts who enter the campaign now (ON CONFLICT: each contact enters once).

    A "start" campaign takes its segment once, when it starts; the other entries look for
    newcomers at every tick. When the flow opens with a plain message step, its deliveries
    are planned straight from the newcomers and committed before their journeys are
    written (just past that step), so that sending starts as early as it can; a tick cut
    short in between plans nothing twice and writes the journeys next time."""
    if flow.first is None or campaign.segment_id is None:
        return
    if campaign.entry_kind == "start" and db.session.scalar(
        select(Journey.id).where(Journey.campaign_id == campaign.id).limit(1)
    ):
        return
    members = segment_query(campaign.segment_id)
    if campaign.entry_kind == "event":
        members = select(ContactEvent.contact_id).where(
            ContactEvent.kind == campaign.entry_event,
            ContactEvent.occurred_at >= campaign.started_at,
            ContactEvent.contact_id.in_(members),
        )
    entered = Contact.id.in_(select(Journey.contact_id).where(Journey.campaign_id == campaign.id))
    newcomers = select(Contact.id).where(Contact.id.in_(members), ~entered)
    first = flow.steps[flow.first]
    step_id, last_message = flow.first, None
    if first.kind == StepKind.MESSAGE and not (first.config or {}).get("ab"):
        plan_step(
            campaign_id=campaign.id,
            step_id=first.id,
            channel=first.channel or "email",
            content_version_id=first.content_version_id,
            contacts=newcomers,
            due_at=next_send_time(campaign, now),
            now=now,
        )
        _planned(flow, campaign.id)
        step_id, last_message = flow.next[first.id], first.id
    newcomers = newcomers.subquery()
    rows = select(
        literal(campaign.id),
        newcomers.c.id,
        literal(step_id),
        literal(JourneyStatus.ACTIVE.value if step_id is not None else JourneyStatus.COMPLETED.value),
        literal(now, Journey.arrived_at.type),
        literal(now, Journey.entered_at.type),
        literal(""),
        literal(last_message),
        literal(now if last_message else None, Journey.last_message_at.type),
        literal(now if step_id is None else None, Journey.finished_at.type),
    )
    columns = Journey.__table__.c
    db.session.execute(
        insert_ignoring_duplicates(
            Journey.__table__,
            [
                columns.campaign_id,
                columns.contact_id,
                columns.step_id,
                columns.status,
                columns.arrived_at,
                columns.entered_at,
                columns.exit_reason,
                columns.last_message_step_id,
                columns.last_message_at,
                columns.finished_at,
            ],
            rows,
        )
    )


def _exit(campaign_id: int, reason: str, now: datetime, *conditions: Any) -> int:
    return db.session.execute(
        update(Journey)
        .where(Journey.campaign_id == campaign_id, Journey.status == JourneyStatus.ACTIVE, *conditions)
        .values(status=JourneyStatus.EXITED, exit_reason=reason, step_id=None, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount


def apply_exits(campaign: Campaign, flow: Flow, now: datetime) -> int:
    """Journeys that meet an exit criterion leave; their pending messages are cancelled."""
    gone = _exit(
        campaign.id,
        "unsubscribed",
        now,
        Journey.contact_id.in_(
            select(Contact.id).where(or_(Contact.unsubscribed.is_(True), Contact.suppressed.is_(True)))
        ),
    )
    for step in flow.order:
        if step.kind != StepKind.EXIT:
            continue
        config = step.config or {}
        if config.get("reason") == "converted" and config.get("value"):
            converted = exists().where(
                ContactEvent.contact_id == Journey.contact_id,
                ContactEvent.kind == str(config["value"]),
                ContactEvent.occurred_at >= Journey.entered_at,
            )
            gone += _exit(campaign.id, "converted", now, converted)
        elif config.get("reason") == "entered_segment" and config.get("value"):
            gone += _exit(
                campaign.id, "entered_segment", now, Journey.contact_id.in_(segment_query(int(config["value"])))
            )
    if gone:
        cancel_pending(campaign.id, Journey.exit_reason.in_(EXIT_CRITERIA))
    return gone


def cancel_campaign_work(campaign_id: int) -> dict[str, int]:
    """A cancelled campaign sends nothing more: pending messages are cancelled and every
    journey ends (senders stop at their next status check, within a few dozen messages)."""
    cancelled = cancel_pending(campaign_id)
    ended = _exit(campaign_id, "cancelled", utcnow())
    return {"cancelled_messages": cancelled, "ended_journeys": ended}


def cancel_pending(campaign_id: int, *journey_conditions: Any) -> int:
    """Cancel the campaign's pending deliveries (of the journeys matching the conditions)."""
    conditions = [Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.PENDING]
    if journey_conditions:
        conditions.append(
            Delivery.contact_id.in_(
                select(Journey.contact_id).where(Journey.campaign_id == campaign_id, *journey_conditions)
            )
        )
    return db.session.execute(
        update(Delivery)
        .where(*conditions)
        .values(status=DeliveryStatus.CANCELLED)
        .execution_options(synchronize_session=False)
    ).rowcount


# -- steps ---------------------------------------------------------------------------------------
def _run_message(campaign: Campaign, flow: Flow, step: CampaignStep, now: datetime) -> int:
    due_at = next_send_time(campaign, now)
    target = flow.next[step.id]
    ab = (step.config or {}).get("ab")
    common = {"campaign_id": campaign.id, "step_id": step.id, "channel": step.channel or "email", "now": now}
    moved_values = {"last_message_step_id": step.id, "last_message_at": now}
    if not ab:
        plan_step(
            **common,
            content_version_id=step.content_version_id,
            contacts=_contacts_at(campaign.id, step.id),
            due_at=due_at,
        )
        _planned(flow, campaign.id)
        return _move(campaign.id, step.id, target, now, **moved_values)
    return _run_ab(campaign, flow, step, ab, common, moved_values, target, due_at, now)


def _run_ab(campaign, flow, step, ab, common, moved_values, target, due_at, now) -> int:
    """The test share gets A or B at once; the rest wait at the step for the winner."""
    db.session.execute(
        insert_ignoring_duplicates(AbResult.__table__).values(
            step_id=step.id,
            test_started_at=now,
            decide_at=now + timedelta(hours=int(ab["window_hours"])),
            stats={},
        )
    )
    result = db.session.get(AbResult, step.id, populate_existing=True)
    moved = 0
    if result.winner is None:
        in_test = (Journey.id % 100) < int(ab["share"])
        for variant, version_id, parity in (("a", step.content_version_id, 0), ("b", int(ab["version_b"]), 1)):
            chosen = and_(in_test, Journey.contact_id % 2 == parity)
            plan_step(
                **common,
                content_version_id=version_id,
                contacts=_contacts_at(campaign.id, step.id, chosen),
                due_at=due_at,
                variant=variant,
            )
            moved += _move(campaign.id, step.id, target, now, chosen, **moved_values)
        _planned(flow, campaign.id)
        if now < result.decide_at:
            return moved
        decide_winner(step, result, ab.get("metric", "opens"), now)
    plan_step(
        **common,
        content_version_id=result.winner_version_id,
        contacts=_contacts_at(campaign.id, step.id),
        due_at=due_at,
        variant="winner",
    )
    _planned(flow, campaign.id)
    return moved + _move(campaign.id, step.id, target, now, **moved_values)


def decide_winner(step: CampaignStep, result: AbResult, metric: str, now: datetime) -> None:
    """The variant with the higher unique open (or click) rate among its sent messages wins;
    a tie goes to A, the version the step was built with."""
    kind = EventKind.EMAIL_CLICK if metric == "clicks" else EventKind.EMAIL_OPEN
    sent = dict(
        db.session.execute(
            select(Delivery.variant, func.count())
            .where(
                Delivery.step_id == step.id, Delivery.status == DeliveryStatus.SENT, Delivery.variant.in_(("a", "b"))
            )
            .group_by(Delivery.variant)
        ).all()
    )
    reacted = dict(
        db.session.execute(
            select(Delivery.variant, func.count(func.distinct(Delivery.contact_id)))
            .join(
                ContactEvent,
                and_(
                    ContactEvent.contact_id == Delivery.contact_id,
                    ContactEvent.kind == kind,
                    ContactEvent.properties["delivery_id"].as_integer() == Delivery.id,
                ),
            )
            .where(Delivery.step_id == step.id, Delivery.variant.in_(("a", "b")))
            .group_by(Delivery.variant)
        ).all()
    )
    stats = {v: {"sent": sent.get(v, 0), metric: reacted.get(v, 0)} for v in ("a", "b")}
    rates = {v: (stats[v][metric] / stats[v]["sent"]) if stats[v]["sent"] else 0.0 for v in ("a", "b")}
    winner = "b" if rates["b"] > rates["a"] else "a"
    result.winner = winner
    result.winner_version_id = step.content_version_id if winner == "a" else int(step.config["ab"]["version_b"])
    result.stats = stats
    result.decided_at = now
    audit.record(
        None, "campaign.ab_decided", f"campaign:{step.campaign_id}", {"step": step.id, **stats, "winner": winner}
    )


def _run_delay(campaign: Campaign, flow: Flow, step: CampaignStep, now: datetime) -> int:
    config = step.config or {}
    length = timedelta(days=int(config.get("days", 0)), hours=int(config.get("hours", 0)))
    since = Journey.entered_at if config.get("relative_to") == "entry" else Journey.arrived_at
    return _move(campaign.id, step.id, flow.next[step.id], now, since <= now - length)


def branch_condition(config: dict[str, Any]) -> Any:
    """A SQL condition over a journey: the branch's yes."""
    condition = config.get("condition")
    if condition == "score_gte":
        return Journey.contact_id.in_(select(Contact.id).where(Contact.score >= int(config.get("value") or 0)))
    since = func.coalesce(Journey.last_message_at, Journey.entered_at)
    event = [
        ContactEvent.contact_id == Journey.contact_id,
        ContactEvent.kind == BRANCH_EVENT_KINDS[condition],
        ContactEvent.occurred_at >= since,
    ]
    if condition == "clicked_link" and config.get("value"):
        event.append(ContactEvent.properties["url"].as_string().contains(str(config["value"]), autoescape=True))
    return exists().where(*event)


def _run_branch(campaign: Campaign, flow: Flow, step: CampaignStep, now: datetime) -> int:
    config = step.config or {}
    step_yes, step_no = flow.branch_targets[step.id]
    window = timedelta(days=int(config.get("window_days") or 0))
    moved = _move(campaign.id, step.id, step_yes, now, branch_condition(config))
    return moved + _move(campaign.id, step.id, step_no, now, Journey.arrived_at <= now - window)


def _run_action(campaign: Campaign, flow: Flow, step: CampaignStep, now: datetime) -> int:
    from portal.audience.service import tag_by_name

    config = step.config or {}
    kind, value, target = config.get("type"), config.get("value"), flow.next[step.id]
    if kind in ("add_tag", "remove_tag"):
        tag = tag_by_name(str(value))
        contacts = _contacts_at(campaign.id, step.id)
        if kind == "add_tag":
            rows = select(contacts.subquery().c[0], literal(tag.id), literal(f"campaign:{campaign.id}"), literal(now))
            columns = ContactTag.__table__.c
            db.session.execute(
                insert_ignoring_duplicates(
                    ContactTag.__table__, [columns.contact_id, columns.tag_id, columns.source, columns.added_at], rows
                )
            )
        else:
            db.session.execute(
                delete(ContactTag).where(ContactTag.tag_id == tag.id, ContactTag.contact_id.in_(contacts))
            )
        return _move(campaign.id, step.id, target, now)
    # Not idempotent: applied only to the journeys this call moved.
    moved = _move(campaign.id, step.id, target, now, returning=True)
    for start in range(0, len(moved), 1000):
        chunk = moved[start : start + 1000]
        if kind == "change_score":
            db.session.execute(
                update(Contact)
                .where(Contact.id.in_(chunk))
                .values(score=Contact.score + int(value or 0), updated_at=now)
                .execution_options(synchronize_session=False)
            )
        elif kind == "notify_owner":
            rows = db.session.execute(select(Contact.id, Contact.name, Contact.owner_id).where(Contact.id.in_(chunk)))
            for contact_id, name, owner_id in rows:
                notify(
                    [owner_id or campaign.owner_id],
                    link=f"/audience/contacts/{contact_id}",
                    kind="campaign.follow_up",
                    contact=name or contact_id,
                    campaign=campaign.name,
                )
                queue_robot_notice("campaign.follow_up", contact=name or contact_id, campaign=campaign.name)
    return len(moved)


def _run_exit(campaign: Campaign, flow: Flow, step: CampaignStep, now: datetime) -> int:
    # Reaching the exit step ends the journey; messages already planned still go out.
    return _exit(campaign.id, "exit_step", now, Journey.step_id == step.id)


RUNNERS = {
    StepKind.MESSAGE: _run_message,
    StepKind.DELAY: _run_delay,
    StepKind.BRANCH: _run_branch,
    StepKind.ACTION: _run_action,
    StepKind.EXIT: _run_exit,
}


def advance(campaign: Campaign, now: datetime, on_planned: Callable[[int], Any] | None = None) -> int:
    """Run every step that is due for the campaign's journeys, repeatedly, until nothing
    moves (a journey may pass several immediate steps in one call). Returns the moves."""
    flow = Flow(campaign, on_planned)
    enrol(campaign, flow, now)
    total = 0
    for _ in range(len(flow.order) + 1):
        moved = sum(RUNNERS[StepKind(step.kind)](campaign, flow, step, now) for step in flow.order)
        total += moved
        if not moved:
            break
    # After the steps, so that a message planned for someone who has left is on record as
    # excluded (with the reason) before the journey ends.
    apply_exits(campaign, flow, now)
    return total


def _finish_if_done(campaign: Campaign, now: datetime) -> bool:
    """A campaign that enrolled its audience once is completed when no journey is active and
    no message is left to send."""
    if campaign.entry_kind != "start":
        return False
    # Existence, not counts: this runs at every tick while a large campaign sends.
    active = db.session.scalar(
        select(Journey.id).where(Journey.campaign_id == campaign.id, Journey.status == JourneyStatus.ACTIVE).limit(1)
    )
    open_delivery = db.session.scalar(
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign.id,
            Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.SENDING)),
        )
        .limit(1)
    )
    if active is not None or open_delivery is not None:
        return False
    campaign.status = CampaignStatus.COMPLETED
    campaign.finished_at = now
    audit.record(None, "campaign.completed", f"campaign:{campaign.id}", {})
    return True


def start_due_campaigns(now: datetime) -> list[int]:
    """Scheduled campaigns whose time has come start running (once, whoever else tries)."""
    due = db.session.scalars(
        select(Campaign.id).where(Campaign.status == CampaignStatus.SCHEDULED, Campaign.scheduled_at <= now)
    ).all()
    started = []
    for campaign_id in due:
        changed = db.session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.SCHEDULED)
            .values(status=CampaignStatus.RUNNING, started_at=func.coalesce(Campaign.started_at, now), pause_reason="")
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed:
            audit.record(None, "campaign.started", f"campaign:{campaign_id}", {})
            started.append(campaign_id)
    db.session.commit()
    return started


def run_due(now: datetime | None = None, on_planned: Callable[[int], Any] | None = None) -> list[int]:
    """One tick: start due campaigns, advance every running one (each in its own
    transaction), and return the running campaigns that have messages due now, for the
    caller to start senders for. `on_planned(campaign_id)`, when given, is called as soon as
    a campaign's new deliveries are committed, so that sending need not wait for the rest."""
    from portal.delivery.sender import release_expired_leases

    now = now or utcnow()
    release_expired_leases(now)
    start_due_campaigns(now)
    sendable = []
    for campaign_id in db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)).all():
        campaign = db.session.get(Campaign, campaign_id, populate_existing=True)
        if campaign is None or campaign.status != CampaignStatus.RUNNING:
            continue
        advance(campaign, now)
        if (
            not _finish_if_done(campaign, now)
            and in_send_window(campaign, now)
            and has_due_deliveries(campaign.id, now)
        ):
            sendable.append(campaign.id)
        db.session.commit()
    return sendable


def has_due_deliveries(campaign_id: int, now: datetime) -> bool:
    return (
        db.session.scalar(
            select(Delivery.id)
            .where(
                Delivery.campaign_id == campaign_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.due_at <= now,
            )
            .limit(1)
        )
        is not None
    )
