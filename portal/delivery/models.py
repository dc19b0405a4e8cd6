"""The deliveries ledger: one row per (campaign step, contact), whatever happens.

The unique (step_id, contact_id) is what guarantees at most one message per step and
contact: RQ may run a job twice, two workers may race, a scheduler may overlap, and the
ledger still holds one row, claimed by one sender at a time.

    pending --claim--> sending --sent / bounced / failed
       ^                  |
       +-- retry (4xx, lease expired, campaign paused mid-batch)
    submitted  handed to WeCom as part of a mass-send task: waiting for the owning employee
               to confirm it and for the per-customer result (portal/delivery/wecom_tasks.py)
    excluded   left out at planning, with the reason
    skipped    left out at sending time (unsubscribed or suppressed since planning)
    cancelled  the campaign was cancelled or the contact left it first
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from portal.audience.models import BigId
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SUBMITTED = "submitted"
    SENT = "sent"
    BOUNCED = "bounced"
    FAILED = "failed"
    EXCLUDED = "excluded"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# Still to be sent (or being sent): what "remaining" means on the progress bar.
OPEN_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
# Attempted and settled: the base of the delivery and bounce rates.
SETTLED_STATUSES = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.FAILED)


class ExclusionReason(enum.StrEnum):
    """Why a contact of the audience gets no message from a step (first that applies)."""

    SUPPRESSED = "suppressed"
    UNSUBSCRIBED = "unsubscribed"
    NO_CONSENT = "no_consent"
    NO_ADDRESS = "no_address"
    FREQUENCY_CAP = "frequency_cap"
    # Over WeCom's own limits on how many mass messages a customer may receive (settings
    # wecom.max_per_customer_per_day / _per_month): WeCom would refuse the message anyway.
    WECOM_LIMIT = "wecom_limit"


class Delivery(db.Model):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("step_id", "contact_id", name="uq_deliveries_step_contact"),
        # The senders' claim: due pending rows of one campaign.
        Index("ix_deliveries_campaign_status_due", "campaign_id", "status", "due_at"),
        # The frequency cap: a contact's recent messages.
        Index("ix_deliveries_contact_due", "contact_id", "due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("campaign_steps.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))
    content_version_id: Mapped[int] = mapped_column(ForeignKey("content_versions.id", ondelete="RESTRICT"))
    # "" for a plain step; "a" or "b" for the test share of an A/B step; "winner" for the rest.
    variant: Mapped[str] = mapped_column(String(8), default="")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    # An ExclusionReason for excluded/skipped rows.
    reason: Mapped[str] = mapped_column(String(32), default="")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last reply of the receiving side when it was not a plain acceptance.
    result_code: Mapped[int | None] = mapped_column(Integer)
    result_detail: Mapped[str] = mapped_column(String(32), default="")
    result_message: Mapped[str] = mapped_column(Text, default="")
    # What the recipient did with this message, first time each (written by the tracking
    # endpoints beside the events): reports read these rather than aggregating the events.
    # A click counts as an open too.
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AttemptOutcome(enum.StrEnum):
    """What one attempt of a delivery came to: a channel's `Outcome`, or one of these."""

    ACCEPTED = "accepted"
    RETRY = "retry"
    HARD_BOUNCE = "hard_bounce"
    PAUSE = "pause"
    FAILED = "failed"
    # The destination asked us to slow down (a robot's 45009, a domain's 421 "too many"):
    # sent again later, not counted against the recipient.
    THROTTLED = "throttled"
    # Handed to WeCom in a mass-send task; the per-customer result follows.
    SUBMITTED = "submitted"


class DeliveryAttempt(db.Model):
    """Every attempt of a delivery with the receiving side's answer: the ledger row keeps
    only the last one, the delivery detail shows them all."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(BigId, ForeignKey("deliveries.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(String(32), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WeComTask(db.Model):
    """One WeCom mass-send task (add_msg_template) of a step for one owning employee; its
    per-customer results are read back into the ledger until it is done."""

    __tablename__ = "wecom_tasks"
    __table_args__ = (Index("ix_wecom_tasks_open", "done", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("campaign_steps.id", ondelete="CASCADE"))
    owner_userid: Mapped[str] = mapped_column(String(64))
    msgid: Mapped[str] = mapped_column(String(128))
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RobotNotice(db.Model):
    """An internal notice for the WeCom group robot (alerts, sales hand-off): kept until the
    robot accepts it, so that its 20-a-minute limit delays notices and loses none."""

    __tablename__ = "robot_notices"
    __table_args__ = (Index("ix_robot_notices_status_due", "status", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # A notification kind and its parameters (portal.labels.notification_text makes the sentence).
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    result: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TrackingIntakeMark(db.Model):
    """One row: the last entry of the tracking intake stream written to the database
    (portal.delivery.intake). Moved in the same transaction as the events it covers, so an
    entry is written once however often a flush is repeated."""

    __tablename__ = "tracking_intake_mark"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_entry: Mapped[str] = mapped_column(String(40))
