"""Reports: what a person asked to be built (kind + parameters), the file it produced, the
monthly schedules that ask for them, and the cost and revenue entered against campaigns.

The campaigns table is not altered: what the finance side of a campaign costs lives here."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class ReportKind(enum.StrEnum):
    CAMPAIGN_PDF = "campaign_pdf"
    CAMPAIGN_XLSX = "campaign_xlsx"
    TRACKING_XLSX = "tracking_xlsx"
    BACKUP_ZIP = "backup_zip"


class ReportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


class CampaignCost(db.Model):
    """One cost and/or revenue entry for a campaign (media spend, a fair, offline deals).

    Revenue here is what purchase events do not carry (deals closed by sales); revenue
    from purchase events is attributed by the metrics themselves."""

    __tablename__ = "campaign_costs"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    spent_on: Mapped[date] = mapped_column(Date)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    note: Mapped[str] = mapped_column(String(500), default="")
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReportSchedule(db.Model):
    """A monthly report (or backup export) built on `day_of_month` for the month before."""

    __tablename__ = "report_schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # a ReportKind
    name: Mapped[str] = mapped_column(String(200), default="")
    # {"campaign_ids": [...], "conversion_kind": "purchase", "conversion_days": 30}
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    day_of_month: Mapped[int] = mapped_column(Integer, default=1)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The last month ("2026-10") a report was made for: the periodic job skips it next time.
    last_period: Mapped[str] = mapped_column(String(7), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Report(db.Model):
    """One report file, built by a worker; the history page lists these."""

    __tablename__ = "reports"
    __table_args__ = (
        # A schedule makes at most one report per month, however often the periodic job runs.
        UniqueConstraint("schedule_id", "period", name="uq_reports_schedule_period"),
        Index("ix_reports_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # a ReportKind
    title: Mapped[str] = mapped_column(String(300), default="")
    # Filters the figures were built with: campaign_ids, date_from, date_to, conversion_kind, ...
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ReportStatus.QUEUED)
    # The file's name under STORAGE_DIR/reports, once built.
    file_name: Mapped[str | None] = mapped_column(String(255))
    file_size: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    schedule_id: Mapped[int | None] = mapped_column(ForeignKey("report_schedules.id", ondelete="SET NULL"))
    period: Mapped[str | None] = mapped_column(String(7))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- rollups: the dashboard's counters, kept up to date from the ledger (see rollups.py) ---


class ReportRollup(db.Model):
    """Message counters of one campaign step, one local day of sending (the message's send
    time, or when it was due if never sent) and one key of one contact dimension ("" for
    the step's own totals). Each message adds at most 1 to each counter, so the counters of
    any set of cells add up; `reached`, `channel_reached` and `all_channel_reached` count a
    contact once, on the first delivered message of its campaign, of its campaign and
    channel, and of its channel across campaigns."""

    __tablename__ = "report_rollups"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), default="")
    # Ledger rows, excluded ones too: a cell with none left is deleted.
    messages: Mapped[int] = mapped_column(Integer, default=0)
    audience: Mapped[int] = mapped_column(Integer, default=0)
    attempted: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    hard_bounces: Mapped[int] = mapped_column(Integer, default=0)
    soft_bounces: Mapped[int] = mapped_column(Integer, default=0)
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    unsubscribes: Mapped[int] = mapped_column(Integer, default=0)
    reached: Mapped[int] = mapped_column(Integer, default=0)
    channel_reached: Mapped[int] = mapped_column(Integer, default=0)
    all_channel_reached: Mapped[int] = mapped_column(Integer, default=0)
    # Conversions of rollups.CONVERSION_KIND within CONVERSION_DAYS and the revenue they
    # bring: a contact's in a campaign counted on its first delivered message there; a
    # step's on each of its messages; a channel's once per contact, within the campaign and
    # across all of them (on the first delivered message of each, like the reach counters).
    converted: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[float] = mapped_column(Float, default=0.0)
    step_converted: Mapped[int] = mapped_column(Integer, default=0)
    step_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    channel_converted: Mapped[int] = mapped_column(Integer, default=0)
    channel_revenue: Mapped[float] = mapped_column(Float, default=0.0)
    all_channel_converted: Mapped[int] = mapped_column(Integer, default=0)
    all_channel_revenue: Mapped[float] = mapped_column(Float, default=0.0)


class ReportSeriesCount(db.Model):
    """Delivered messages, first opens and first clicks of one campaign step per UTC hour
    they happened (`series` is "sent", "opens" or "clicks"), kept apart by the local day the
    message was sent so that a date range selects messages as the counters do."""

    __tablename__ = "report_series_counts"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    series: Mapped[str] = mapped_column(String(8), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), default="")
    count: Mapped[int] = mapped_column(Integer, default=0)


class ReportCountedContact(db.Model):
    """What one contact's messages add to the rollups as they were last counted, so that a
    refresh takes exactly that away before adding what they add now (see rollups.py)."""

    __tablename__ = "report_counted_contacts"

    contact_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)


class ReportDirtyContact(db.Model):
    """A contact whose messages or grouping fields changed since the rollups were refreshed.
    Written by database triggers on deliveries, contacts and contact_tags (migration 0016),
    so no writer has to remember it; taken (and deleted) by the refresh."""

    __tablename__ = "report_dirty_contacts"
    __table_args__ = (Index("ix_report_dirty_contacts_contact_id", "contact_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


class ReportRollupState(db.Model):
    """One row: when the rollups were last brought up to date, and a token that changes with
    every refresh (figures cached from older rollups are not reused)."""

    __tablename__ = "report_rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    generation: Mapped[str] = mapped_column(String(32))
