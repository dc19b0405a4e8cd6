"""Campaigns: an audience, approved content, a schedule, and a flow of steps."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.audience.models import BigId
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class StepKind(enum.StrEnum):
    MESSAGE = "message"
    DELAY = "delay"
    BRANCH = "branch"
    ACTION = "action"
    EXIT = "exit"


class Campaign(db.Model):
    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # The goal: a metric, a target and a horizon ("lead conversion +15 % in 30 days").
    goal_metric: Mapped[str] = mapped_column(String(32), default="conversion_rate")
    goal_target: Mapped[float] = mapped_column(default=0.0)
    goal_days: Mapped[int] = mapped_column(Integer, default=30)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    # start: everyone in the segment when it starts; segment_enter: contacts entering later; event: on an event
    entry_kind: Mapped[str] = mapped_column(String(16), default="start")
    entry_event: Mapped[str] = mapped_column(String(32), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    window_start: Mapped[str] = mapped_column(String(5), default="09:00")
    window_end: Mapped[str] = mapped_column(String(5), default="21:00")
    # The days of the week the window opens on, ISO numbers ("12345": Monday to Friday).
    window_days: Mapped[str] = mapped_column(String(7), default="1234567")
    throttle_per_minute: Mapped[int] = mapped_column(Integer, default=600)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.DRAFT)
    # A draft's planned start (set while configuring); once published, when it starts.
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why the campaign is paused when the portal paused it (an alert, a refusing mail server).
    pause_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    steps: Mapped[list[CampaignStep]] = relationship(
        order_by="CampaignStep.position", lazy="selectin", cascade="all, delete-orphan"
    )


class CampaignStep(db.Model):
    """One node of the flow. Steps on the main path have no parent; a branch's steps hang
    under it with `branch` = "yes" or "no", ordered by `position` within their path."""

    __tablename__ = "campaign_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_steps.id", ondelete="CASCADE"))
    branch: Mapped[str | None] = mapped_column(String(3))
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16), default="")
    content_version_id: Mapped[int | None] = mapped_column(ForeignKey("content_versions.id", ondelete="RESTRICT"))
    # delay: {"days": 3, "hours": 0, "relative_to": "previous"|"entry"}
    # branch: {"condition": "opened"|"clicked"|"clicked_link"|"form_submitted"|"score_gte",
    #          "value": ..., "window_days": 3}
    # action: {"type": "add_tag"|"remove_tag"|"notify_owner"|"change_score", "value": ...}
    # exit: {"reason": "unsubscribed"|"converted"|"entered_segment", "value": ...}
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TestAddress(db.Model):
    """An internal address a person receives test sends at (company domains only)."""

    __tablename__ = "test_addresses"
    __test__ = False  # not a pytest test class, whatever its name
    __table_args__ = (UniqueConstraint("user_id", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    value: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TestSend(db.Model):
    """One test message of one step to one internal address; kept as the campaign's history
    and checked by the publish gate. Never counted in campaign statistics."""

    __tablename__ = "test_sends"
    __test__ = False  # not a pytest test class, whatever its name

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_steps.id", ondelete="SET NULL"))
    content_version_id: Mapped[int | None] = mapped_column(ForeignKey("content_versions.id", ondelete="SET NULL"))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    recipient: Mapped[str] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    subject: Mapped[str] = mapped_column(String(400), default="")
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued | sent | failed
    message: Mapped[str] = mapped_column(Text, default="")
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JourneyStatus(enum.StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"


class Journey(db.Model):
    """One contact's way through one campaign's flow: the step it is at and since when.
    Whether a step is due follows from `arrived_at` (a delay, a branch's window) or
    `entered_at` (a delay relative to entry), compared with constants, so the sequence
    runner moves journeys in sets, never one by one."""

    __tablename__ = "campaign_journeys"
    __table_args__ = (
        UniqueConstraint("campaign_id", "contact_id", name="uq_journeys_campaign_contact"),
        Index("ix_journeys_campaign_status_step", "campaign_id", "status", "step_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_steps.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=JourneyStatus.ACTIVE)
    # When the journey reached its current step.
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The last message step planned for this contact: branches look at behaviour since then.
    last_message_step_id: Mapped[int | None] = mapped_column(ForeignKey("campaign_steps.id", ondelete="SET NULL"))
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str] = mapped_column(String(32), default="")
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AbResult(db.Model):
    """The decision of an A/B step: when the test window ends, and which variant won."""

    __tablename__ = "ab_results"

    step_id: Mapped[int] = mapped_column(ForeignKey("campaign_steps.id", ondelete="CASCADE"), primary_key=True)
    test_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decide_at: Mapped[datetime] = mapped_column(UTCDateTime)
    winner: Mapped[str | None] = mapped_column(String(1))  # "a" | "b"
    winner_version_id: Mapped[int | None] = mapped_column(ForeignKey("content_versions.id", ondelete="SET NULL"))
    # {"a": {"sent": n, "opens": n, "clicks": n}, "b": {...}}
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SendCounts(db.Model):
    """A running campaign's settled messages, counted by the senders in the same statement
    that reads the campaign's status after each chunk of results, so that judging the alerts
    never scans the ledger and costs no extra round trip; and what the alerts judge since the
    last resume after an alert (the counts at that resume, and the limits a manager set for
    this campaign, with why).

    The sliding window hops in half-windows: `segment_*` are the counts where the current
    half began, `window_*` where the one before it began, so the counts now minus `window_*`
    cover the last half to whole window of settled messages."""

    __tablename__ = "campaign_send_counts"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    settled: Mapped[int] = mapped_column(BigId, default=0)
    sent: Mapped[int] = mapped_column(BigId, default=0)
    bounced: Mapped[int] = mapped_column(BigId, default=0)
    resumed_settled: Mapped[int] = mapped_column(BigId, default=0)
    resumed_sent: Mapped[int] = mapped_column(BigId, default=0)
    resumed_bounced: Mapped[int] = mapped_column(BigId, default=0)
    window_settled: Mapped[int] = mapped_column(BigId, default=0)
    window_sent: Mapped[int] = mapped_column(BigId, default=0)
    window_bounced: Mapped[int] = mapped_column(BigId, default=0)
    segment_settled: Mapped[int] = mapped_column(BigId, default=0)
    segment_sent: Mapped[int] = mapped_column(BigId, default=0)
    segment_bounced: Mapped[int] = mapped_column(BigId, default=0)
    # This campaign's own limits (percent), instead of the portal's settings; None: the settings.
    max_bounce_rate: Mapped[float | None] = mapped_column()
    min_delivery_rate: Mapped[float | None] = mapped_column()
    limits_reason: Mapped[str] = mapped_column(Text, default="")
