"""The rules of reporting: who may see, build and download what; building report files in
workers; monthly schedules; cost entries; and the administrator's backup export.

Functions take the acting user and plain values, never the request, so that views, jobs
and tests call them alike."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select

from portal import audit, notify, storage
from portal.access import Permission
from portal.campaigns.models import Campaign
from portal.extensions import db
from portal.models_base import utcnow
from portal.queue import REPORTS_QUEUE, JobRun, enqueue
from portal.reports import charts, metrics, rollups
from portal.reports.models import CampaignCost, Report, ReportKind, ReportSchedule, ReportStatus

DOWNLOAD_TYPES = {
    ReportKind.CAMPAIGN_PDF: ("pdf", "application/pdf"),
    ReportKind.CAMPAIGN_XLSX: ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ReportKind.TRACKING_XLSX: ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ReportKind.BACKUP_ZIP: ("zip", "application/zip"),
}
TRACKING_SORTS = ("name", "reached", "open_rate", "click_rate", "conversions", "cost_per_acquisition")
DEFAULT_LOCALE = "zh_CN"


class ReportError(ValueError):
    """A refused reporting action; the message says why."""


class ReportRefused(PermissionError):
    """The person may not see or fetch this report (views answer 403)."""


def _need(actor: Any, permission: Permission) -> None:
    if not actor.can(permission):
        raise ReportRefused(permission)


def _permission_for(kind: str) -> Permission:
    return Permission.BACKUP_EXPORT if kind == ReportKind.BACKUP_ZIP else Permission.REPORTS_EXPORT


AREA = "reports"  # the storage area of report files


# --- dashboard and tracking table ---------------------------------------------------------


@dataclass
class Dashboard:
    figures: metrics.Figures
    svgs: dict[str, str]
    grouping: str
    campaigns: list[Any]


def campaign_choices() -> list[Any]:
    """(id, name) of every campaign, by name, for the filters."""
    return list(db.session.execute(select(Campaign.id, Campaign.name).order_by(Campaign.name)))


def _grouping(params: dict[str, Any]) -> str:
    grouping = params.get("grouping")
    return str(grouping) if grouping in metrics.CONTACT_DIMENSIONS else "province"


def dashboard(actor: Any, params: dict[str, Any]) -> Dashboard:
    """The dashboard's figures for the filters in `params` (campaign_ids, dates, grouping...)."""
    _need(actor, Permission.REPORTS_VIEW)
    filters = metrics.Filters.from_params(params)
    grouping = _grouping(params)
    # What the page shows: the campaign and channel tables and the chosen grouping; the other
    # groupings are computed along when figures must be computed, for the next filter change.
    figures = metrics.compute(filters, ("campaign", "channel", str(grouping)), metrics.CONTACT_DIMENSIONS)
    svgs = {key: charts.to_svg(chart, f"chart-{key}") for key, chart in charts.report_charts(figures).items()}
    return Dashboard(figures, svgs, str(grouping), campaign_choices())


def dashboard_version(
    actor: Any, params: dict[str, Any], may_refresh: bool = True
) -> tuple[tuple[Any, ...], str] | None:
    """(what decides the dashboard's figures for `params`: the filters and the grouping; the
    generation of the figures), so that a page rendered once can be shown again to others
    asking the same until the generation moves on. Brings the rollups up to date first when
    they are near the age limit; where that is due and `may_refresh` is false, None."""
    _need(actor, Permission.REPORTS_VIEW)
    state = rollups.fresh_state(may_refresh)
    if state is None:
        return None
    return (metrics.Filters.from_params(params), _grouping(params)), state[1]


def tracking(actor: Any, params: dict[str, Any], sort: str = "name", descending: bool = False) -> list[metrics.Metrics]:
    """One row per campaign: reached, rates, conversions, cost per acquisition, notes; sorted.

    Rows without a value for the sort column (no cost entered...) come last either way."""
    _need(actor, Permission.REPORTS_VIEW)
    filters = metrics.Filters.from_params(params)
    _as_of, _total, groups = metrics.kept(filters, ("campaign",))
    rows = groups["campaign"]
    sort = sort if sort in TRACKING_SORTS else "name"
    attribute = "label" if sort == "name" else sort
    present = [m for m in rows if getattr(m, attribute) is not None]
    missing = [m for m in rows if getattr(m, attribute) is None]
    present.sort(key=lambda m: getattr(m, attribute), reverse=descending)
    return present + missing


# --- report history, building and downloads ----------------------------------------------


def request_report(actor: Any, kind: str, params: dict[str, Any], title: str = "") -> Report:
    """Record a report to build and queue the job that builds it (a JobRun shows progress)."""
    if kind not in set(ReportKind):
        raise ReportError(_("Unknown kind of report."))
    _need(actor, _permission_for(kind))
    stored = {} if kind == ReportKind.BACKUP_ZIP else metrics.Filters.from_params(params).as_params()
    report = Report(kind=kind, params=stored, created_by_id=actor.id, title=title or default_title(kind, stored))
    db.session.add(report)
    db.session.flush()
    audit.record(actor, "report.requested", f"report:{report.id}", {"kind": kind, "params": stored})
    db.session.commit()
    _enqueue_build(report, actor)
    return report


def _enqueue_build(report: Report, actor: Any) -> None:
    run = enqueue(
        "jobs.reports.build_report",
        report.id,
        kind="report",
        actor=actor,
        queue=REPORTS_QUEUE,
        timeout=3600,
        retries=1,
    )
    report.job_run_id = run.id if run else None
    db.session.commit()


def default_title(kind: str, params: dict[str, Any]) -> str:
    if kind == ReportKind.BACKUP_ZIP:
        return _("Data backup")
    if kind == ReportKind.TRACKING_XLSX:
        return _("Campaign tracking")
    ids = params.get("campaign_ids") or []
    names = list(db.session.scalars(select(Campaign.name).where(Campaign.id.in_(ids)).order_by(Campaign.name)))
    subject = "、".join(names[:3]) + ("…" if len(names) > 3 else "") if names else _("All campaigns")
    return _("Campaign report: %(subject)s", subject=subject)


def visible_report(actor: Any, report_id: int) -> Report:
    report = db.session.get(Report, report_id)
    if report is None:
        raise ReportError(_("No such report."))
    _need(actor, Permission.BACKUP_EXPORT if report.kind == ReportKind.BACKUP_ZIP else Permission.REPORTS_VIEW)
    return report


def job_run_of(report: Report) -> JobRun | None:
    return db.session.get(JobRun, report.job_run_id) if report.job_run_id else None


def history(actor: Any, kind: str = "", limit: int = 100) -> list[Report]:
    """Reports the person may see, newest first (backups only for those who may make them)."""
    query = select(Report).order_by(Report.created_at.desc(), Report.id.desc()).limit(limit)
    if kind:
        query = query.where(Report.kind == kind)
    if not actor.can(Permission.BACKUP_EXPORT):
        query = query.where(Report.kind != ReportKind.BACKUP_ZIP)
    if not actor.can(Permission.REPORTS_VIEW):
        query = query.where(Report.kind == ReportKind.BACKUP_ZIP)
    return list(db.session.scalars(query))


def report_file_for(actor: Any, report_id: int) -> tuple[Iterator[bytes], str, str]:
    """(the file's bytes in chunks, download name, mimetype) of a ready report; the download
    is audited."""
    report = visible_report(actor, report_id)
    _need(actor, _permission_for(report.kind))
    if report.status != ReportStatus.READY or not report.file_name:
        raise ReportError(_("The report is not ready."))
    try:
        chunks = storage.open_stream(AREA, report.file_name)
    except FileNotFoundError:
        raise ReportError(_("The report file is missing; build the report again.")) from None
    audit.record(actor, "report.downloaded", f"report:{report.id}", {"kind": report.kind, "file": report.file_name})
    db.session.commit()
    extension, mimetype = DOWNLOAD_TYPES[ReportKind(report.kind)]
    return chunks, f"report-{report.id}.{extension}", mimetype


def build_report_file(report_id: int, progress: Callable[[int, str], None] | None = None) -> Report:
    """Build the report's file (called by the worker). Idempotent: a ready report whose file
    exists is left as it is; otherwise the file is (re)written under a name of its own."""
    from portal.auth.models import User

    progress = progress or (lambda _percent, _message: None)
    report = db.session.get(Report, report_id)
    if report is None:
        raise ReportError(f"no report {report_id}")
    if report.status == ReportStatus.READY and report.file_name and storage.exists(AREA, report.file_name):
        return report
    report.status = ReportStatus.RUNNING
    db.session.commit()
    owner = db.session.get(User, report.created_by_id) if report.created_by_id else None
    try:
        with force_locale((owner.locale if owner else None) or DEFAULT_LOCALE):
            name = _write(report, owner, progress)
    except Exception as exc:
        db.session.rollback()
        report = db.session.get(Report, report_id)
        report.status = ReportStatus.FAILED
        report.error = f"{type(exc).__name__}: {exc}"[:2000]
        report.finished_at = utcnow()
        db.session.commit()
        raise
    report.file_name = name
    report.file_size = storage.size(AREA, name)
    report.status = ReportStatus.READY
    report.error = ""
    report.finished_at = utcnow()
    if owner is not None:
        with force_locale(owner.locale or DEFAULT_LOCALE):
            message = _("Report ready: %(title)s", title=report.title)
        # Workers have no request to build URLs from: the path is the one reports.show serves.
        notify.notify([owner.id], message[:500], f"/reports/{report.id}")
    db.session.commit()
    return report


def _write(report: Report, owner: Any, progress: Callable[[int, str], None]) -> str:
    extension, _mimetype = DOWNLOAD_TYPES[ReportKind(report.kind)]
    name = f"report-{report.id}-{utcnow():%Y%m%d%H%M%S}.{extension}"
    # Readers never see a half-written file: it is stored under its name only when complete.
    with storage.writing(AREA, name) as partial:
        if report.kind == ReportKind.BACKUP_ZIP:
            write_backup(partial, progress)
        else:
            progress(10, _("Computing the figures"))
            figures = metrics.compute(metrics.Filters.from_params(report.params))
            progress(50, _("Writing the file"))
            if report.kind == ReportKind.CAMPAIGN_PDF:
                from portal.reports.pdf import build_pdf

                who = (owner.display_name if owner else "") or _("the portal")
                build_pdf(partial, figures, report.title, who, utcnow(), progress)
            else:
                from portal.reports.xlsx import build_workbook

                build_workbook(partial, figures, tracking_only=report.kind == ReportKind.TRACKING_XLSX)
    return name


# --- costs ---------------------------------------------------------------------------------


def _money(value: Any, label: str) -> Decimal:
    try:
        amount = Decimal(str(value or "0").replace(",", "").strip() or "0")
    except InvalidOperation as exc:
        raise ReportError(_("%(field)s must be an amount.", field=label)) from exc
    if amount < 0 or amount >= Decimal("1e12"):
        raise ReportError(_("%(field)s must be between 0 and 999,999,999,999.", field=label))
    return amount.quantize(Decimal("0.01"))


def add_cost(actor: Any, campaign_id: int, values: dict[str, Any]) -> CampaignCost:
    """Record a cost and/or revenue entry against a campaign (managers)."""
    _need(actor, Permission.CAMPAIGN_COSTS_EDIT)
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise ReportError(_("No such campaign."))
    cost, revenue = _money(values.get("cost"), _("Cost")), _money(values.get("revenue"), _("Revenue"))
    if not cost and not revenue:
        raise ReportError(_("Enter a cost or a revenue."))
    spent_on = values.get("spent_on") or date.today()
    if isinstance(spent_on, str):
        try:
            spent_on = date.fromisoformat(spent_on)
        except ValueError as exc:
            raise ReportError(_("The date is not a date.")) from exc
    entry = CampaignCost(
        campaign_id=campaign.id,
        spent_on=spent_on,
        cost=cost,
        revenue=revenue,
        note=str(values.get("note") or "").strip()[:500],
        entered_by_id=actor.id,
    )
    db.session.add(entry)
    db.session.flush()
    rollups.figures_changed()  # the dashboards kept rendered show the cost per acquisition
    audit.record(
        actor,
        "campaign.cost_entered",
        f"campaign:{campaign.id}",
        {"entry": entry.id, "cost": str(cost), "revenue": str(revenue), "note": entry.note},
    )
    db.session.commit()
    return entry


def costs_of(actor: Any, campaign_id: int) -> tuple[Campaign, list[CampaignCost]]:
    _need(actor, Permission.CAMPAIGN_COSTS_EDIT)
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise ReportError(_("No such campaign."))
    entries = db.session.scalars(
        select(CampaignCost).where(CampaignCost.campaign_id == campaign_id).order_by(CampaignCost.spent_on.desc())
    )
    return campaign, list(entries)


# --- monthly schedules -----------------------------------------------------------------------


def schedules_for(actor: Any) -> list[ReportSchedule]:
    """The person's own schedules."""
    query = select(ReportSchedule).where(ReportSchedule.owner_id == actor.id).order_by(ReportSchedule.id)
    return list(db.session.scalars(query))


def create_schedule(
    actor: Any, kind: str, name: str, campaign_ids: list[int], day_of_month: int, params: dict[str, Any] | None = None
) -> ReportSchedule:
    """A monthly report of the chosen campaigns (managers) or a monthly backup (administrators)."""
    if kind not in (ReportKind.CAMPAIGN_PDF, ReportKind.CAMPAIGN_XLSX, ReportKind.BACKUP_ZIP):
        raise ReportError(_("Unknown kind of report."))
    _need(actor, Permission.BACKUP_EXPORT if kind == ReportKind.BACKUP_ZIP else Permission.REPORTS_SCHEDULE)
    if not 1 <= int(day_of_month) <= 28:
        raise ReportError(_("Choose a day between 1 and 28."))
    stored: dict[str, Any] = {}
    if kind != ReportKind.BACKUP_ZIP:
        found = set(db.session.scalars(select(Campaign.id).where(Campaign.id.in_(campaign_ids))))
        if not found:
            raise ReportError(_("Choose at least one campaign."))
        stored = metrics.Filters.from_params({**(params or {}), "campaign_ids": sorted(found)}).as_params()
        stored.pop("date_from")
        stored.pop("date_to")
    schedule = ReportSchedule(
        kind=kind,
        name=(name or "").strip()[:200] or default_title(kind, stored),
        params=stored,
        owner_id=actor.id,
        day_of_month=int(day_of_month),
    )
    db.session.add(schedule)
    db.session.flush()
    audit.record(actor, "report.scheduled", f"report_schedule:{schedule.id}", {"kind": kind, "params": stored})
    db.session.commit()
    return schedule


def delete_schedule(actor: Any, schedule_id: int) -> None:
    schedule = db.session.get(ReportSchedule, schedule_id)
    if schedule is None or schedule.owner_id != actor.id:
        raise ReportError(_("No such schedule."))
    audit.record(actor, "report.unscheduled", f"report_schedule:{schedule.id}", {"name": schedule.name})
    db.session.delete(schedule)
    db.session.commit()


def previous_month(today: date) -> tuple[str, date, date]:
    """("2026-10", first day, last day) of the month before `today`."""
    last = today.replace(day=1) - timedelta(days=1)
    return f"{last:%Y-%m}", last.replace(day=1), last


def run_due_schedules(now: datetime | None = None) -> list[int]:
    """Create and queue last month's report for every schedule whose day has come.

    Idempotent: a schedule makes one report per month (its last_period, and a unique
    (schedule, period) in the table), however often this runs."""
    from portal.auth.models import User

    now = now or datetime.now(UTC)
    today = now.astimezone(metrics.ZoneInfo("Asia/Shanghai")).date()
    period, first, last = previous_month(today)
    made = []
    due = select(ReportSchedule).where(
        ReportSchedule.enabled.is_(True),
        ReportSchedule.day_of_month <= today.day,
        ReportSchedule.last_period != period,
    )
    for schedule in list(db.session.scalars(due)):
        owner = db.session.get(User, schedule.owner_id)
        if (
            owner is None
            or not owner.active
            or not owner.can(
                Permission.BACKUP_EXPORT if schedule.kind == ReportKind.BACKUP_ZIP else Permission.REPORTS_SCHEDULE
            )
        ):
            continue  # someone who lost the right gets no more reports
        exists = db.session.scalar(select(Report.id).where(Report.schedule_id == schedule.id, Report.period == period))
        schedule.last_period = period
        if exists:
            db.session.commit()
            continue
        params = schedule.params
        if schedule.kind != ReportKind.BACKUP_ZIP:
            params = {**params, "date_from": first.isoformat(), "date_to": last.isoformat()}
        with force_locale(owner.locale or DEFAULT_LOCALE):
            title = f"{schedule.name} · {period}"
        report = Report(
            kind=schedule.kind,
            params=params,
            created_by_id=owner.id,
            title=title[:300],
            schedule_id=schedule.id,
            period=period,
        )
        db.session.add(report)
        db.session.flush()
        audit.record(None, "report.requested", f"report:{report.id}", {"schedule": schedule.id, "period": period})
        db.session.commit()
        _enqueue_build(report, owner)
        made.append(report.id)
    return made


# --- backup export -------------------------------------------------------------------------


def request_backup(actor: Any) -> Report:
    """Administrators: the tag system, contact tags, campaigns and their results as CSV files."""
    return request_report(actor, ReportKind.BACKUP_ZIP, {})


def write_backup(path: Path, progress: Callable[[int, str], None]) -> None:
    """A zip of CSV files: tags, tag rules, contact tags, campaigns, steps, costs, results.

    Streams each table (contact tags may be millions of rows) straight into the archive."""
    from portal.audience.models import ContactTag, Tag, TagRule
    from portal.campaigns.models import CampaignStep

    def rows_of(columns) -> Any:
        return db.session.execute(select(*columns).execution_options(yield_per=10000))

    tables = [
        ("tags.csv", [Tag.id, Tag.name, Tag.description, Tag.created_at]),
        ("tag_rules.csv", [TagRule.id, TagRule.tag_id, TagRule.rules, TagRule.enabled, TagRule.created_at]),
        ("contact_tags.csv", [ContactTag.contact_id, ContactTag.tag_id, ContactTag.source, ContactTag.added_at]),
        (
            "campaigns.csv",
            [
                Campaign.id,
                Campaign.name,
                Campaign.description,
                Campaign.status,
                Campaign.goal_metric,
                Campaign.goal_target,
                Campaign.goal_days,
                Campaign.segment_id,
                Campaign.owner_id,
                Campaign.started_at,
                Campaign.finished_at,
                Campaign.created_at,
            ],
        ),
        (
            "campaign_steps.csv",
            [
                CampaignStep.id,
                CampaignStep.campaign_id,
                CampaignStep.parent_id,
                CampaignStep.branch,
                CampaignStep.position,
                CampaignStep.kind,
                CampaignStep.channel,
                CampaignStep.content_version_id,
                CampaignStep.config,
            ],
        ),
        (
            "campaign_costs.csv",
            [
                CampaignCost.id,
                CampaignCost.campaign_id,
                CampaignCost.spent_on,
                CampaignCost.cost,
                CampaignCost.revenue,
                CampaignCost.note,
            ],
        ),
    ]

    from portal.audience.importing import neutralise

    def text(value: Any) -> Any:
        """Every text cell neutralised like the other exports: the CSVs open in spreadsheets."""
        if isinstance(value, (dict, list)):
            import json

            return neutralise(json.dumps(value, ensure_ascii=False))
        if isinstance(value, datetime):
            return value.isoformat()
        return neutralise(value) if isinstance(value, str) else value

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for number, (name, columns) in enumerate(tables):
            progress(5 + 80 * number // len(tables), name)
            with archive.open(name, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow([c.key for c in columns])
                for row in rows_of(columns):
                    writer.writerow([text(v) for v in row])
        progress(90, "campaign_results.csv")
        _total, groups = metrics.grouped(metrics.Filters(), ("campaign",))
        with (
            archive.open("campaign_results.csv", "w") as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle,
        ):
            names = [*metrics.SUM_COLUMNS, "attributed_revenue", "cost", "entered_revenue"]
            writer = csv.writer(handle)
            writer.writerow(["campaign_id", "campaign", *names])
            for row in groups["campaign"]:
                writer.writerow([row.key, text(row.label), *(getattr(row, n) for n in names)])
