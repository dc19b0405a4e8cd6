"""Watching running campaigns: progress for the campaign page, and the alerts that pause a
campaign by themselves (delivery rate too low, bounce rate too high, the mail server
refusing us)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from portal import audit, settings
from portal.campaigns.models import AbResult, Campaign, CampaignStatus, CampaignStep, SendCounts
from portal.delivery.models import OPEN_STATUSES, Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import notify

# Why the portal paused a campaign: the English sentence (kept in the audit log and the
# reports) for each code; the campaign page shows the same in the reader's language.
PAUSE_REASONS = {
    "delivery_rate": "Delivery rate {rate}% is below {limit}% after {settled} messages.",
    "bounce_rate": "Bounce rate {rate}% is above {limit}% after {settled} messages.",
    "window_delivery_rate": "Delivery rate {rate}% is below {limit}% over the last {settled} messages.",
    "window_bounce_rate": "Bounce rate {rate}% is above {limit}% over the last {settled} messages.",
    "refused": "The mail server refused the sender: {reply}",
}
# The pauses that judged the campaign's figures (and so ask for them to be acknowledged).
FIGURE_ALERTS = ("delivery_rate", "bounce_rate", "window_delivery_rate", "window_bounce_rate")


def describe_pause(code: str, params: dict[str, Any]) -> str:
    return PAUSE_REASONS[code].format(**params)


def pause_for(campaign_id: int, code: str, **params: Any) -> str:
    """Pause a running campaign on the portal's own authority, say why on its page, tell
    its owner, and record it. Returns the reason, or "" when it was not running (someone
    else paused it first)."""
    reason = describe_pause(code, params)
    stored = json.dumps({"code": code, **params}, ensure_ascii=False)
    changed = db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_((CampaignStatus.RUNNING, CampaignStatus.SCHEDULED)))
        .values(status=CampaignStatus.PAUSED, pause_reason=stored, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not changed:
        return ""
    owner_id, name = db.session.execute(
        select(Campaign.owner_id, Campaign.name).where(Campaign.id == campaign_id)
    ).one()
    audit.record(None, "campaign.auto_paused", f"campaign:{campaign_id}", {"reason": reason, "code": code, **params})
    if owner_id:
        notify(
            [owner_id],
            link=f"/campaigns/{campaign_id}",
            kind="campaign.auto_paused",
            name=name,
            reason={"code": code, **params},
        )
    # The team's group chat hears of it too, when a group robot is configured.
    from portal.delivery.notices import queue_robot_notice

    queue_robot_notice("campaign.auto_paused", name=name, reason={"code": code, **params})
    return reason


def pause_details(stored: str) -> tuple[str, dict[str, Any]] | None:
    """(code, params) of a campaign's stored pause reason, or None for none (or old text)."""
    try:
        value = json.loads(stored) if stored else None
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("code") not in PAUSE_REASONS:
        return None
    code = value.pop("code")
    return code, value


def status_counts(campaign_id: int) -> dict[str, int]:
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
    ).all()
    counts = {status.value: 0 for status in DeliveryStatus}
    counts.update({status: number for status, number in rows})
    return counts


# -- alerts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertLimits:
    """The portal's alert settings, read once by a sender job (a change applies to the next)."""

    min_attempts: int
    window: int
    min_delivery_rate: float
    max_bounce_rate: float

    @classmethod
    def from_settings(cls) -> AlertLimits | None:
        """None when automatic pauses are switched off."""
        if not settings.get("alerts.auto_pause"):
            return None
        return cls(
            min_attempts=int(settings.get("alerts.min_attempts")),
            window=int(settings.get("alerts.window")),
            min_delivery_rate=float(settings.get("alerts.min_delivery_rate")),
            max_bounce_rate=float(settings.get("alerts.max_bounce_rate")),
        )


_COUNT_COLUMNS = (
    SendCounts.settled,
    SendCounts.sent,
    SendCounts.bounced,
    SendCounts.resumed_settled,
    SendCounts.resumed_sent,
    SendCounts.resumed_bounced,
    SendCounts.window_settled,
    SendCounts.window_sent,
    SendCounts.window_bounced,
    SendCounts.max_bounce_rate,
    SendCounts.min_delivery_rate,
)


@dataclass(frozen=True)
class Counts:
    """A campaign's settled messages: in total, at its last resume after an alert, and at the
    start of its sliding window."""

    settled: int = 0
    sent: int = 0
    bounced: int = 0
    resumed_settled: int = 0
    resumed_sent: int = 0
    resumed_bounced: int = 0
    window_settled: int = 0
    window_sent: int = 0
    window_bounced: int = 0
    max_bounce_rate: float | None = None
    min_delivery_rate: float | None = None

    @property
    def since_resume(self) -> int:
        return self.settled - self.resumed_settled


def _ensure_counts_row(campaign_id: int) -> None:
    dialect_insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.session.execute(dialect_insert(SendCounts).values(campaign_id=campaign_id).on_conflict_do_nothing())


def count_results(campaign_id: int, sent: int, bounced: int, failed: int, window: int = 1000) -> tuple[Counts, str]:
    """Add a chunk's settled results to the campaign's counts, in the caller's transaction
    (the one that records the results), moving the sliding window on by half a `window` when
    the current half is full. Returns the counts as they are now, and the campaign's status:
    one statement, which the sender needed anyway for the status. The row lock orders
    concurrent senders."""
    settled = sent + bounced + failed
    totals = {
        "settled": SendCounts.settled + settled,
        "sent": SendCounts.sent + sent,
        "bounced": SendCounts.bounced + bounced,
    }
    hop = totals["settled"] - SendCounts.segment_settled >= max(window // 2, 1)
    moved = {}
    for name, total in totals.items():
        segment = getattr(SendCounts, f"segment_{name}")
        moved[f"window_{name}"] = case((hop, segment), else_=getattr(SendCounts, f"window_{name}"))
        moved[f"segment_{name}"] = case((hop, total), else_=segment)
    status = select(Campaign.status).where(Campaign.id == campaign_id).scalar_subquery()
    add = (
        update(SendCounts)
        .where(SendCounts.campaign_id == campaign_id)
        .values(**totals, **moved)
        .returning(*_COUNT_COLUMNS, status)
        .execution_options(synchronize_session=False)
    )
    row = db.session.execute(add).one_or_none()
    if row is None:
        _ensure_counts_row(campaign_id)
        row = db.session.execute(add).one()
    return Counts(*row[:-1]), row[-1]


def current_counts(campaign_id: int) -> Counts:
    row = db.session.execute(select(*_COUNT_COLUMNS).where(SendCounts.campaign_id == campaign_id)).one_or_none()
    return Counts(*row) if row is not None else Counts()


def own_limits(campaign_id: int) -> dict[str, Any] | None:
    """The limits a manager gave this campaign at a resume, with why; None when it has none."""
    row = db.session.execute(
        select(SendCounts.max_bounce_rate, SendCounts.min_delivery_rate, SendCounts.limits_reason).where(
            SendCounts.campaign_id == campaign_id
        )
    ).one_or_none()
    if row is None or (row.max_bounce_rate is None and row.min_delivery_rate is None):
        return None
    return {
        "max_bounce_rate": row.max_bounce_rate,
        "min_delivery_rate": row.min_delivery_rate,
        "reason": row.limits_reason,
    }


def _crossed(
    settled: int, sent: int, bounced: int, min_delivery: float, max_bounce: float, prefix: str
) -> tuple[str, dict[str, Any]] | None:
    delivery_rate = 100 * sent / settled
    bounce_rate = 100 * bounced / settled
    figures = {"settled": settled, "sent": sent, "bounced": bounced, "failed": settled - sent - bounced}
    if delivery_rate < min_delivery:
        return f"{prefix}delivery_rate", {"rate": f"{delivery_rate:.1f}", "limit": f"{min_delivery:g}", **figures}
    if bounce_rate > max_bounce:
        return f"{prefix}bounce_rate", {"rate": f"{bounce_rate:.1f}", "limit": f"{max_bounce:g}", **figures}
    return None


def judge(counts: Counts, limits: AlertLimits) -> tuple[str, dict[str, Any]] | None:
    """Whether the campaign's figures cross a limit: (pause code, params) or None. Judged on
    what settled since the last resume after an alert, once at least `min_attempts` have:
    over all of it, and over the sliding window (the last half to whole `window`) when that
    is a shorter stretch of at least `min_attempts`. Arithmetic on the counts only."""
    settled = counts.since_resume
    if settled < max(limits.min_attempts, 1):
        return None
    min_delivery = counts.min_delivery_rate if counts.min_delivery_rate is not None else limits.min_delivery_rate
    max_bounce = counts.max_bounce_rate if counts.max_bounce_rate is not None else limits.max_bounce_rate
    verdict = _crossed(
        settled,
        counts.sent - counts.resumed_sent,
        counts.bounced - counts.resumed_bounced,
        min_delivery,
        max_bounce,
        prefix="",
    )
    windowed = counts.settled - counts.window_settled
    if verdict or counts.window_settled <= counts.resumed_settled or windowed < limits.min_attempts:
        return verdict
    return _crossed(
        windowed,
        counts.sent - counts.window_sent,
        counts.bounced - counts.window_bounced,
        min_delivery,
        max_bounce,
        prefix="window_",
    )


def check_alerts(campaign_id: int, counts: Counts | None = None, limits: AlertLimits | None = None) -> str:
    """Pause the campaign when its figures cross a limit (see `judge`). Returns the reason
    when it paused it. With `counts` (a sender's, just recorded) the pause joins the caller's
    transaction; without, the counts are read and the pause committed."""
    limits = limits or AlertLimits.from_settings()
    if limits is None:
        return ""
    standalone = counts is None
    verdict = judge(counts or current_counts(campaign_id), limits)
    reason = pause_for(campaign_id, verdict[0], **verdict[1]) if verdict else ""
    if standalone:
        db.session.commit()
    return reason


def resume_after_alert(campaign_id: int, max_bounce_rate: float | None, min_delivery_rate: float | None, why: str):
    """From now on the alerts judge only what settles after this moment (a fresh start of
    at least `alerts.min_attempts`), against the given limits of the campaign's own, if any.
    In the caller's transaction."""
    _ensure_counts_row(campaign_id)
    db.session.execute(
        update(SendCounts)
        .where(SendCounts.campaign_id == campaign_id)
        .values(
            resumed_settled=SendCounts.settled,
            resumed_sent=SendCounts.sent,
            resumed_bounced=SendCounts.bounced,
            window_settled=SendCounts.settled,
            window_sent=SendCounts.sent,
            window_bounced=SendCounts.bounced,
            segment_settled=SendCounts.settled,
            segment_sent=SendCounts.sent,
            segment_bounced=SendCounts.bounced,
            max_bounce_rate=max_bounce_rate,
            min_delivery_rate=min_delivery_rate,
            limits_reason=why,
        )
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class Progress:
    sent: int
    remaining: int
    bounced: int
    failed: int
    excluded: int
    skipped: int
    cancelled: int
    # Messages a minute over the last five minutes, and the minutes left at that rate.
    per_minute: float
    eta_minutes: float | None
    excluded_by_reason: dict[str, int]

    @property
    def total(self) -> int:
        return self.sent + self.remaining + self.bounced + self.failed

    @property
    def percent(self) -> int:
        return int(100 * (self.total - self.remaining) / self.total) if self.total else 0


def progress(campaign_id: int) -> Progress:
    """What the campaign page shows while it sends: sent / remaining, rate and ETA."""
    counts = status_counts(campaign_id)
    window = timedelta(minutes=5)
    since = utcnow() - window
    recent = db.session.scalar(
        select(func.count()).where(
            Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.SENT, Delivery.sent_at >= since
        )
    )
    first = db.session.scalar(
        select(func.min(Delivery.sent_at)).where(Delivery.campaign_id == campaign_id, Delivery.sent_at >= since)
    )
    elapsed = max((utcnow() - first).total_seconds(), 1.0) if first else window.total_seconds()
    per_minute = 60 * (recent or 0) / elapsed
    remaining = sum(counts[s] for s in OPEN_STATUSES)
    reasons = dict(
        db.session.execute(
            select(Delivery.reason, func.count())
            .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.EXCLUDED)
            .group_by(Delivery.reason)
        ).all()
    )
    return Progress(
        sent=counts[DeliveryStatus.SENT],
        remaining=remaining,
        bounced=counts[DeliveryStatus.BOUNCED],
        failed=counts[DeliveryStatus.FAILED],
        excluded=counts[DeliveryStatus.EXCLUDED],
        skipped=counts[DeliveryStatus.SKIPPED],
        cancelled=counts[DeliveryStatus.CANCELLED],
        per_minute=per_minute,
        eta_minutes=(remaining / per_minute) if per_minute and remaining else None,
        excluded_by_reason=reasons,
    )


def alert_history(campaign_id: int) -> list[dict[str, Any]]:
    """The automatic pauses of this campaign, newest first."""
    events = db.session.scalars(
        select(audit.AuditEvent)
        .where(audit.AuditEvent.target == f"campaign:{campaign_id}", audit.AuditEvent.action == "campaign.auto_paused")
        .order_by(audit.AuditEvent.id.desc())
        .limit(20)
    )
    history = []
    for event in events:
        details = dict(event.details or {})
        reason = details.pop("reason", "")
        code = details.pop("code", None)
        history.append({"at": event.created_at, "reason": reason, "code": code, "params": details})
    return history


def ab_results(campaign_id: int) -> list[AbResult]:
    return list(
        db.session.scalars(
            select(AbResult)
            .join(CampaignStep, CampaignStep.id == AbResult.step_id)
            .where(CampaignStep.campaign_id == campaign_id)
        )
    )


def window_opens(campaign: Campaign) -> datetime | None:
    """When the campaign's send window next opens, or None while it is open."""
    from portal.campaigns.runner import in_send_window, next_send_time

    now = utcnow()
    return None if in_send_window(campaign, now) else next_send_time(campaign, now)
