"""Watching running campaigns: progress for the campaign page, and the alerts that pause a
campaign by themselves (delivery rate too low, bounce rate too high, the mail server
refusing us)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from portal import audit, settings
from portal.campaigns.models import AbResult, Campaign, CampaignStatus, CampaignStep
from portal.delivery.models import OPEN_STATUSES, Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import notify


def pause_for(campaign_id: int, reason: str) -> bool:
    """Pause a running campaign on the portal's own authority, say why on its page, tell
    its owner, and record it. False when it was not running (someone else paused it)."""
    changed = db.session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_((CampaignStatus.RUNNING, CampaignStatus.SCHEDULED)))
        .values(status=CampaignStatus.PAUSED, pause_reason=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not changed:
        return False
    owner_id, name = db.session.execute(
        select(Campaign.owner_id, Campaign.name).where(Campaign.id == campaign_id)
    ).one()
    audit.record(None, "campaign.auto_paused", f"campaign:{campaign_id}", {"reason": reason})
    if owner_id:
        notify([owner_id], f"活动已自动暂停：{name} — {reason}", f"/campaigns/{campaign_id}")
    return True


def status_counts(campaign_id: int) -> dict[str, int]:
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
    ).all()
    counts = {status.value: 0 for status in DeliveryStatus}
    counts.update({status: number for status, number in rows})
    return counts


def check_alerts(campaign_id: int) -> str:
    """Pause the campaign when, after enough settled messages, its delivery rate is below or
    its bounce rate above the configured limits. Returns the reason when it paused it."""
    if not settings.get("alerts.auto_pause"):
        return ""
    counts = status_counts(campaign_id)
    settled = counts[DeliveryStatus.SENT] + counts[DeliveryStatus.BOUNCED] + counts[DeliveryStatus.FAILED]
    if settled < int(settings.get("alerts.min_attempts")):
        return ""
    delivery_rate = 100 * counts[DeliveryStatus.SENT] / settled
    bounce_rate = 100 * counts[DeliveryStatus.BOUNCED] / settled
    reason = ""
    if delivery_rate < float(settings.get("alerts.min_delivery_rate")):
        reason = (
            f"Delivery rate {delivery_rate:.1f}% is below {settings.get('alerts.min_delivery_rate')}% "
            f"after {settled} messages."
        )
    elif bounce_rate > float(settings.get("alerts.max_bounce_rate")):
        reason = (
            f"Bounce rate {bounce_rate:.1f}% is above {settings.get('alerts.max_bounce_rate')}% "
            f"after {settled} messages."
        )
    if reason and pause_for(campaign_id, reason):
        db.session.commit()
        return reason
    return ""


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
    return [{"at": e.created_at, "reason": (e.details or {}).get("reason", "")} for e in events]


def ab_results(campaign_id: int) -> list[AbResult]:
    return list(
        db.session.scalars(
            select(AbResult)
            .join(CampaignStep, CampaignStep.id == AbResult.step_id)
            .where(CampaignStep.campaign_id == campaign_id)
        )
    )
