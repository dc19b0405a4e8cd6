"""Reports: what a person asked to be built (kind + parameters), the file it produced, the
monthly schedules that ask for them, and the cost and revenue entered against campaigns.

The campaigns table is not altered: what the finance side of a campaign costs lives here."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
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
