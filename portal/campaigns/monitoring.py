"""Watching running campaigns: progress for the campaign page, and the alerts that pause a
campaign by themselves (delivery rate too low, bounce rate too high, the mail server
refusing us)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from portal import audit, settings
from portal.campaigns.models import AbResult, Campaign, CampaignStatus, CampaignStep
from portal.delivery.models import OPEN_STATUSES, Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import notify

# Why the portal paused a campaign: the English sentence (kept in the audit log and the
# reports) for each code; the campaign page shows the same in the reader's language.
PAUSE_REASONS = {
    "delivery_rate": "Delivery rate {rate}% is below {limit}% after {settled} messages.",
    "bounce_rate": "Bounce rate {rate}% is above {limit}% after {settled} messages.",
    "refused": "The mail server refused the sender: {reply}",
}


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
        notify([owner_id], f"活动已自动暂停：{name} — {reason}", f"/campaigns/{campaign_id}")
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
        limit = settings.get("alerts.min_delivery_rate")
        reason = pause_for(campaign_id, "delivery_rate", rate=f"{delivery_rate:.1f}", limit=limit, settled=settled)
    elif bounce_rate > float(settings.get("alerts.max_bounce_rate")):
        limit = settings.get("alerts.max_bounce_rate")
        reason = pause_for(campaign_id, "bounce_rate", rate=f"{bounce_rate:.1f}", limit=limit, settled=settled)
    if reason:
        db.session.commit()
    return reason


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
