"""Reports pages: the dashboard, the campaign tracking table, report history with progress
and downloads, cost entries, monthly schedules and the backup export."""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.datastructures import MultiDict

from portal import kept_pages
from portal.access import Permission, require, require_any
from portal.errors import render_refusal
from portal.htmx import page_or_fragment, redirect_after_post
from portal.recent import Recent
from portal.reports import formatting, metrics, rollups, service
from portal.reports.forms import CostForm, ScheduleForm
from portal.reports.models import ReportKind
from portal.storage import attachment

bp = Blueprint("reports", __name__)

STATUS_LABELS = {
    "queued": _l("Queued"),
    "running": _l("Running"),
    "ready": _l("Ready"),
    "failed": _l("Failed"),
}
KIND_LABELS = {
    "campaign_pdf": _l("PDF report"),
    "campaign_xlsx": _l("Excel workbook"),
    "tracking_xlsx": _l("Campaign tracking (Excel)"),
    "backup_zip": _l("Data backup (CSV files)"),
}


def _actor():
    return current_user._get_current_object()


def _filter_params(source: MultiDict[str, str] | None = None) -> dict:
    """The filters as the service reads them, from `source` (by default the request's query
    string or form)."""
    source = request.values if source is None else source
    return {**source.to_dict(), "campaign_ids": source.getlist("campaign_ids")}


@bp.app_context_processor
def report_helpers():
    return {
        "fmt": formatting.display,
        "report_status_label": lambda s: STATUS_LABELS.get(s, s),
        "report_kind_label": lambda k: KIND_LABELS.get(k, k),
    }


@bp.errorhandler(service.ReportRefused)
def refused(_error):
    return render_refusal()


# The dashboard as rendered, for everyone asking the same filters in the same language with the
# same export permission (the only one that changes it): twenty managers on one dashboard cost
# one rendering per period, not one per view; the page around it is each person's own
# (kept_pages.page_around). A rendering is kept for half the figures' age limit, and the figures
# it shows were no older than the other half when it was made (rollups.fresh_state), so nobody
# sees figures older than the setting allows; a new generation of the figures (new results, a
# cost entered) makes it again.
_rendered = Recent()


def dashboard_page(reader: kept_pages.Reader, make: bool) -> bytes | None:
    """The dashboard (or, for htmx, its fragment) for `reader`, the view's and the kept-pages
    tier's alike: `make` makes what is not kept."""
    params = _filter_params(reader.args)
    found = service.dashboard_version(reader, params, may_refresh=make)
    if found is None:
        return None
    asked, generation = found
    body = kept_pages.kept_rendering(
        _rendered,
        (asked, reader.locale, reader.can(Permission.REPORTS_EXPORT), reader.fragment),
        rollups.max_age() / 2,
        generation,
        "reports/_dashboard.html" if reader.fragment else "reports/_index_body.html",
        lambda: {
            "view": service.dashboard(_actor(), params),
            "fm": formatting,
            "conversion_kinds": metrics.CONVERSION_KINDS,
            "contact_dimensions": metrics.CONTACT_DIMENSIONS,
        },
        make,
    )
    if body is None:
        return None
    html = kept_pages.with_csrf(body, reader.csrf_token)
    return html if reader.fragment else kept_pages.page_around("reports/index.html", html, reader, make)


@bp.get("/")
@require(Permission.REPORTS_VIEW)
def index():
    return dashboard_page(kept_pages.reader_of_request(), make=True)


kept_pages.register("reports.index", dashboard_page)


@bp.get("/tracking")
@require(Permission.REPORTS_VIEW)
def tracking():
    sort = request.args.get("sort", "name")
    descending = request.args.get("order") == "desc"
    rows = service.tracking(_actor(), _filter_params(), sort, descending)
    return page_or_fragment(
        "reports/tracking.html",
        "reports/_tracking_table.html",
        rows=rows,
        headers=[("name", _("Campaign"))] + [(c.attribute, c.label) for c in formatting.TRACKING_COLUMNS],
        sort=sort,
        descending=descending,
        fm=formatting,
    )


@bp.post("/generate")
@require(Permission.REPORTS_EXPORT)
def generate():
    kind = request.form.get("kind", "")
    if kind == ReportKind.BACKUP_ZIP:
        abort(400)  # backups have their own page and permission
    try:
        report = service.request_report(_actor(), kind, _filter_params())
    except service.ReportError as exc:
        flash(str(exc), "error")
        return redirect_after_post(url_for("reports.index"))
    return redirect_after_post(url_for("reports.show", report_id=report.id))


@bp.get("/history")
@require_any(Permission.REPORTS_VIEW, Permission.BACKUP_EXPORT)
def history():
    return render_template("reports/history.html", reports=service.history(_actor()))


def _visible(report_id: int):
    try:
        return service.visible_report(_actor(), report_id)
    except service.ReportError:
        abort(404)


@bp.get("/<int:report_id>")
@require_any(Permission.REPORTS_VIEW, Permission.BACKUP_EXPORT)
def show(report_id: int):
    report = _visible(report_id)
    return page_or_fragment("reports/show.html", "reports/_status.html", report=report, run=service.job_run_of(report))


@bp.get("/<int:report_id>/status")
@require_any(Permission.REPORTS_VIEW, Permission.BACKUP_EXPORT)
def status(report_id: int):
    report = _visible(report_id)
    return page_or_fragment("reports/show.html", "reports/_status.html", report=report, run=service.job_run_of(report))


@bp.get("/<int:report_id>/download")
@require_any(Permission.REPORTS_EXPORT, Permission.BACKUP_EXPORT)
def download(report_id: int):
    try:
        chunks, name, mimetype = service.report_file_for(_actor(), report_id)
    except service.ReportError as exc:
        flash(str(exc), "error")
        return redirect_after_post(url_for("reports.history"))
    return attachment(chunks, name, mimetype)


@bp.route("/campaigns/<int:campaign_id>/costs", methods=["GET", "POST"])
@require(Permission.CAMPAIGN_COSTS_EDIT)
def costs(campaign_id: int):
    form = CostForm()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                service.add_cost(_actor(), campaign_id, form.data)
            except service.ReportError as exc:
                flash(str(exc), "error")
                status = 422
            else:
                flash(_("Entry saved."), "success")
                return redirect_after_post(url_for("reports.costs", campaign_id=campaign_id))
        else:
            status = 422
    try:
        campaign, entries = service.costs_of(_actor(), campaign_id)
    except service.ReportError:
        abort(404)
    return render_template("reports/costs.html", form=form, campaign=campaign, entries=entries), status


def _schedule_form() -> ScheduleForm:
    form = ScheduleForm()
    form.campaign_ids.choices = [(c.id, c.name) for c in service.campaign_choices()]
    form.conversion_kind.choices = [(k, str(formatting.CONVERSION_KIND_LABELS[k])) for k in metrics.CONVERSION_KINDS]
    if not current_user.can(Permission.BACKUP_EXPORT):
        form.kind.choices = [c for c in form.kind.choices if c.value != "backup_zip"]
    if not current_user.can(Permission.REPORTS_SCHEDULE):
        form.kind.choices = [c for c in form.kind.choices if c.value == "backup_zip"]
    return form


@bp.route("/schedules", methods=["GET", "POST"])
@require_any(Permission.REPORTS_SCHEDULE, Permission.BACKUP_EXPORT)
def schedules():
    form = _schedule_form()
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                service.create_schedule(
                    _actor(),
                    form.kind.data,
                    form.name.data,
                    form.campaign_ids.data or [],
                    form.day_of_month.data,
                    {"conversion_kind": form.conversion_kind.data, "conversion_days": form.conversion_days.data},
                )
            except service.ReportError as exc:
                flash(str(exc), "error")
                status = 422
            else:
                flash(_("Schedule saved."), "success")
                return redirect_after_post(url_for("reports.schedules"))
        else:
            status = 422
    return render_template("reports/schedules.html", form=form, schedules=service.schedules_for(_actor())), status


@bp.post("/schedules/<int:schedule_id>/delete")
@require_any(Permission.REPORTS_SCHEDULE, Permission.BACKUP_EXPORT)
def delete_schedule(schedule_id: int):
    try:
        service.delete_schedule(_actor(), schedule_id)
    except service.ReportError as exc:
        flash(str(exc), "error")
    return redirect_after_post(url_for("reports.schedules"))


@bp.route("/backups", methods=["GET", "POST"])
@require(Permission.BACKUP_EXPORT)
def backups():
    if request.method == "POST":
        report = service.request_backup(_actor())
        return redirect_after_post(url_for("reports.show", report_id=report.id))
    return render_template("reports/backups.html", reports=service.history(_actor(), kind=ReportKind.BACKUP_ZIP))
