"""Campaign pages: the list, settings, the flow drawn and edited on its canvas, and its validation."""

from __future__ import annotations

from flask import Blueprint, abort, flash, make_response, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from portal import audit, labels
from portal import settings as app_settings
from portal.access import Permission, require, require_any
from portal.audience.models import Segment
from portal.campaigns import canvas, monitoring, publishing, service
from portal.campaigns.flow_templates import TEMPLATES
from portal.campaigns.models import Campaign, CampaignStep
from portal.content.models import Asset, AssetVersion, VersionStatus
from portal.extensions import db
from portal.htmx import is_htmx, redirect_after_post, same_site_path

bp = Blueprint("campaigns", __name__)

KIND_LABELS = {
    "message": _l("Message"),
    "delay": _l("Delay"),
    "branch": _l("Branch"),
    "action": _l("Action"),
    "exit": _l("Exit"),
}
STATUS_LABELS = {
    "draft": _l("Draft"),
    "scheduled": _l("Scheduled"),
    "running": _l("Running"),
    "paused": _l("Paused"),
    "completed": _l("Completed"),
    "cancelled": _l("Cancelled"),
}
CONDITION_LABELS = {
    "opened": _l("opened the previous message"),
    "clicked": _l("clicked a link"),
    "clicked_link": _l("clicked a specific link"),
    "form_submitted": _l("submitted a form"),
    "score_gte": _l("score at least"),
}
EXIT_LABELS = {
    "unsubscribed": _l("unsubscribed"),
    "converted": _l("converted (did an event)"),
    "entered_segment": _l("entered a segment"),
}
FIGURE_LABELS = {
    "waiting": _l("waiting"),
    "reached": _l("reached"),
    "sent": _l("sent"),
    "delivered": _l("delivered"),
    "opened": _l("opened"),
    "clicked": _l("clicked"),
}
AB_METRIC_LABELS = {"clicks": _l("clicks"), "opens": _l("opens")}
ACTION_LABELS = {
    "add_tag": _l("add tag"),
    "remove_tag": _l("remove tag"),
    "notify_owner": _l("notify the owner"),
    "change_score": _l("change score"),
}

PAUSE_REASON_LABELS = {
    "delivery_rate": _l("Delivery rate %(rate)s%% is below %(limit)s%% after %(settled)s messages."),
    "bounce_rate": _l("Bounce rate %(rate)s%% is above %(limit)s%% after %(settled)s messages."),
    "window_delivery_rate": _l("Delivery rate %(rate)s%% is below %(limit)s%% over the last %(settled)s messages."),
    "window_bounce_rate": _l("Bounce rate %(rate)s%% is above %(limit)s%% over the last %(settled)s messages."),
    "refused": _l("The mail server refused the sender: %(reply)s"),
}
RESUME_REFUSALS = {
    "not_paused": _l("Only a paused campaign can be resumed."),
    "use_resume": _l("This campaign is paused: resume it rather than publishing it again."),
    "acknowledgement_required": _l(
        "The portal paused this campaign because of its figures: tick the box to confirm you have "
        "looked at them before resuming."
    ),
    "limit_reason_required": _l("Say why this campaign gets limits of its own."),
    "limit_not_a_number": _l("“%(value)s” is not a percentage."),
    "limit_out_of_range": _l("A limit is a percentage between 0 and 100, not %(value)s."),
}


def pause_reason_label(code: str | None, params: dict, fallback: str = "") -> str:
    """Why the portal paused a campaign, in the reader's language."""
    if code not in PAUSE_REASON_LABELS:
        return fallback
    return str(PAUSE_REASON_LABELS[code]) % params


def _auto_paused_notification(params: dict) -> str:
    reason = params.get("reason") or {}
    details = {k: v for k, v in reason.items() if k != "code"}
    why = pause_reason_label(reason.get("code"), details)
    return str(_("Campaign paused automatically: %(name)s — %(reason)s", name=params["name"], reason=why))


def _auto_paused_details(details: dict) -> str:
    return pause_reason_label(details["code"], details)


def _resumed_details(details: dict) -> str:
    alert = details.get("alert")
    if alert:
        why = pause_reason_label(alert["code"], {k: v for k, v in alert.items() if k != "code"})
        sentence = str(_("Resumed after the automatic pause (%(reason)s); the figures were acknowledged.", reason=why))
    else:
        sentence = str(_("Resumed."))
    limits = []
    if details.get("max_bounce_rate") is not None:
        limits.append(str(_("pause above %(rate)s%% bounced", rate=details["max_bounce_rate"])))
    if details.get("min_delivery_rate") is not None:
        limits.append(str(_("pause below %(rate)s%% delivered", rate=details["min_delivery_rate"])))
    if limits:
        separator = str(_(", "))
        own = str(
            _(
                "Limits of its own: %(limits)s, because: %(why)s",
                limits=separator.join(limits),
                why=details["limits_reason"],
            )
        )
        sentence = f"{sentence} {own}"
    return sentence


labels.NOTIFICATION_RENDERERS["campaign.auto_paused"] = _auto_paused_notification
audit.DESCRIPTIONS["campaign.auto_paused"] = _auto_paused_details
audit.DESCRIPTIONS["campaign.resumed"] = _resumed_details


EXCLUSION_LABELS = labels.EXCLUSION_REASONS


def _actor():
    return current_user._get_current_object()


def step_label(step: CampaignStep) -> str:
    config = step.config or {}
    if step.kind == "message":
        version = db.session.get(AssetVersion, step.content_version_id) if step.content_version_id else None
        if version is None:
            return str(_("Message (no content)"))
        ab = config.get("ab") or {}
        return f"✉ {version.asset.name} v{version.number}" + (" · A/B" if ab else "")
    if step.kind == "delay":
        days, hours = config.get("days", 0), config.get("hours", 0)
        if days and hours:
            text = _("Wait %(days)s days %(hours)s hours", days=days, hours=hours)
        elif hours:
            text = _("Wait %(hours)s hours", hours=hours)
        else:
            text = _("Wait %(days)s days", days=days)
        if config.get("relative_to") == "entry":
            text = _("%(wait)s after entry", wait=text)
        return str(text)
    if step.kind == "branch":
        return "◇ " + str(CONDITION_LABELS.get(config.get("condition"), _("Branch")))
    if step.kind == "action":
        return "⚙ " + str(ACTION_LABELS.get(config.get("type"), _("Action"))) + f" {config.get('value', '')}"
    return "■ " + str(_("Exit"))


@bp.app_context_processor
def campaign_labels():
    return {
        "newer_version": service.newer_approved_version,
        "campaign_status_label": lambda s: STATUS_LABELS.get(s, s),
        "step_kind_label": lambda k: KIND_LABELS.get(k, k),
        "step_label": step_label,
        "exclusion_label": lambda r: EXCLUSION_LABELS.get(r, r),
        "pause_reason_label": pause_reason_label,
        "pause_details": monitoring.pause_details,
        "figure_label": lambda f: FIGURE_LABELS.get(f, f),
        # A validation problem's sentence, marked with N_ in the service (no %-formatting).
        "problem_text": lambda message: str(_(message)),
        "version_name": _version_name,
    }


def _version_name(version_id: int | None) -> str:
    version = db.session.get(AssetVersion, version_id) if version_id else None
    return f"{version.asset.name} v{version.number}" if version else "—"


# Reading campaigns and their canvases: people who run them, and people who read the results.
CAN_READ = (Permission.CAMPAIGN_VIEW, Permission.REPORTS_VIEW)


@bp.get("/")
@require_any(*CAN_READ)
def index():
    campaigns = list(db.session.scalars(select(Campaign).order_by(Campaign.updated_at.desc())))
    return render_template("campaigns/index.html", campaigns=campaigns)


@bp.route("/new", methods=["GET", "POST"])
@require(Permission.CAMPAIGN_EDIT)
def new():
    if request.method == "POST":
        try:
            campaign = service.create_campaign(_actor(), _settings_values())
        except service.CampaignError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            return redirect_after_post(url_for("campaigns.show", campaign_id=campaign.id))
    return render_template("campaigns/new.html", templates=TEMPLATES, **_settings_choices()), (
        422 if request.method == "POST" else 200
    )


def _settings_values() -> dict:
    values = request.form.to_dict()
    if "weekdays_shown" in request.form:
        values["weekdays"] = request.form.getlist("weekday")
    return values


def _settings_choices(campaign: Campaign | None = None) -> dict:
    from zoneinfo import ZoneInfo

    from portal.auth.models import User

    planned = ""
    if campaign is not None and campaign.scheduled_at is not None:
        planned = campaign.scheduled_at.astimezone(ZoneInfo(campaign.timezone)).strftime("%Y-%m-%dT%H:%M")

    people = [u for u in db.session.scalars(select(User).order_by(User.name, User.email)) if u.is_active]
    return {
        "segments": _segments(),
        "owners": [u for u in people if u.can(Permission.CAMPAIGN_EDIT)],
        "weekdays": labels.WEEKDAYS,
        "timezones": labels.TIMEZONES,
        "hours": [f"{h:02d}:00" for h in range(24)],
        "planned_start": planned,
    }


def _segments() -> list[Segment]:
    return list(db.session.scalars(select(Segment).order_by(Segment.name)))


def _approved_versions() -> list[AssetVersion]:
    return list(
        db.session.scalars(
            select(AssetVersion).join(Asset).where(AssetVersion.status == VersionStatus.APPROVED).order_by(Asset.name)
        )
    )


def _panel_args() -> dict:
    """Which panel the canvas opens, from the query or the form: a step, or a place to insert."""
    args = request.values
    panel: dict = {"kind": args.get("kind", "")}
    if args.get("step", "").isdigit():
        panel["step_id"] = int(args["step"])
    if args.get("index", "").isdigit():
        parent = args.get("parent", "")
        panel["insert"] = {
            "parent": int(parent) if parent.isdigit() else None,
            "branch": args.get("branch") or None,
            "index": int(args["index"]),
        }
    if args.get("figure") in canvas.FIGURES:
        panel["figure"] = args["figure"]
    return panel


def _canvas_context(
    campaign: Campaign,
    *,
    step_id: int | None = None,
    insert: dict | None = None,
    kind: str = "",
    figure: str | None = None,
    error: str = "",
    notice: str = "",
    values: dict | None = None,
) -> dict:
    selected = db.session.get(CampaignStep, step_id) if step_id else None
    if selected is not None and selected.campaign_id != campaign.id:
        selected = None
    numbers = canvas.step_numbers(campaign)
    contacts = None
    if selected is not None and figure and current_user.can(Permission.AUDIENCE_VIEW):
        contacts = canvas.contacts_behind(campaign.id, selected.id, figure)
    return {
        "campaign": campaign,
        "lane": canvas.layout(campaign),
        "figures": canvas.step_figures(campaign.id),
        "numbers": numbers,
        "can_edit": current_user.can(Permission.CAMPAIGN_EDIT) and service.editable(campaign),
        "may_edit": current_user.can(Permission.CAMPAIGN_EDIT),
        "started": campaign.started_at is not None,
        "live": campaign.status in ("scheduled", "running"),
        "polling": request.args.get("poll") == "1",
        "selected": selected,
        "insert": insert if selected is None else None,
        "kind": kind if kind in KIND_LABELS else "",
        "figure": figure,
        "contacts": contacts,
        "error": error,
        "notice": notice,
        "values": values or {},
        "version_options": [
            (v.id, f"{v.asset.name} v{v.number} · {labels.label('channel', v.asset.kind)}")
            for v in _approved_versions()
        ],
        "canvas_step_values": canvas.step_values,
        "conditions": CONDITION_LABELS,
        "actions": ACTION_LABELS,
        "exits": EXIT_LABELS,
        "kinds": KIND_LABELS,
        "ab_metrics": AB_METRIC_LABELS,
        "templates": TEMPLATES,
    }


@bp.get("/<int:campaign_id>")
@require_any(*CAN_READ)
def show(campaign_id: int):
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    return _show_page(campaign, **_panel_args())


def _show_page(campaign: Campaign, status: int = 200, **panel):
    return (
        render_template(
            "campaigns/show.html",
            problems=service.validate(campaign.id),
            untested=publishing.untested_steps(campaign),
            audience=publishing.audience_preview(campaign),
            test_addresses=publishing.test_addresses(current_user.id),
            history=publishing.test_history(campaign.id),
            steps=service.in_flow_order(campaign),
            metrics=service.GOAL_METRICS,
            paused=publishing.paused_figures(campaign.id) if campaign.status == "paused" else None,
            alert_min_attempts=app_settings.get("alerts.min_attempts"),
            alert_defaults={
                "max_bounce_rate": app_settings.get("alerts.max_bounce_rate"),
                "min_delivery_rate": app_settings.get("alerts.min_delivery_rate"),
            },
            **_settings_choices(campaign),
            **_canvas_context(campaign, **panel),
            **_progress_context(campaign),
        ),
        status,
    )


def _canvas_answer(campaign_id: int, status: int = 200, **panel):
    """The canvas again: to htmx the widget alone (it replaces itself), to a plain form the
    page (after a change, by a 303 to it, so that reloading changes nothing)."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    if is_htmx():
        context = _canvas_context(campaign, **panel)
        body = render_template("campaigns/_canvas.html", **context)
        if request.method == "POST":
            # What is missing changes with the flow: the validation travels along, out of band.
            body += render_template(
                "campaigns/_validation.html", problems=service.validate(campaign.id), oob=True, **context
            )
        response = make_response(body, status)
    elif status == 200 and request.method == "POST":
        if panel.get("notice"):
            flash(panel["notice"], "success")
        query = {"step": panel["step_id"]} if panel.get("step_id") else {}
        return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id, **query) + "#campaign-canvas")
    else:
        response = make_response(_show_page(campaign, status, **panel))
    response.headers["Vary"] = "HX-Request"
    return response


@bp.get("/<int:campaign_id>/canvas")
@require_any(*CAN_READ)
def canvas_widget(campaign_id: int):
    """The canvas alone (htmx: opening a step or a place to insert, polling the figures)."""
    return _canvas_answer(campaign_id, **_panel_args())


def _progress_context(campaign: Campaign) -> dict:
    return {
        # When messages wait for the send window to open, the page says until when.
        "window_opens": monitoring.window_opens(campaign),
        "progress": monitoring.progress(campaign.id),
        "alerts": monitoring.alert_history(campaign.id),
        "own_limits": monitoring.own_limits(campaign.id),
        "ab_results": monitoring.ab_results(campaign.id),
    }


@bp.get("/<int:campaign_id>/progress")
@require_any(*CAN_READ)
def progress(campaign_id: int):
    """The sending progress, polled by the campaign page while the campaign runs."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    return render_template("campaigns/_progress.html", campaign=campaign, **_progress_context(campaign))


@bp.post("/<int:campaign_id>/settings")
@require(Permission.CAMPAIGN_EDIT)
def settings(campaign_id: int):
    try:
        service.update_settings(_actor(), campaign_id, _settings_values())
        flash(_("Campaign saved."), "success")
    except service.CampaignError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


def _int(name: str, default: int = 0) -> int:
    try:
        return int(request.form.get(name, default) or default)
    except ValueError:
        return default


@bp.post("/<int:campaign_id>/steps")
@require(Permission.CAMPAIGN_EDIT)
def add_step(campaign_id: int):
    """Insert a step where the canvas's "+" was: at `index` of the main path or of a
    branch's path (`parent` and `branch`), or at the end of that path."""
    form = request.form
    kind = form.get("kind", "")
    parent = form.get("parent", "")
    if ":" in parent:  # "12:yes", the older form's way of naming a branch's path
        parent, _sep, branch = parent.partition(":")
    else:
        branch = form.get("branch") or None
    parent_id = int(parent) if parent.isdigit() else None
    index = int(form["index"]) if form.get("index", "").isdigit() else None
    try:
        step = service.insert_step(
            _actor(), campaign_id, kind, form.to_dict(), parent_id=parent_id, branch=branch, index=index
        )
    except service.CampaignError as exc:
        db.session.rollback()
        insert = {"parent": parent_id, "branch": branch, "index": index if index is not None else 0}
        return _canvas_answer(campaign_id, 422, insert=insert, kind=kind, error=str(exc), values=form.to_dict())
    notice = _("Step %(number)s added.", number=_number(step))
    return _canvas_answer(campaign_id, step_id=step.id, notice=notice)


def _number(step: CampaignStep) -> int:
    campaign = db.session.get(Campaign, step.campaign_id)
    return canvas.step_numbers(campaign).get(step.id, 0)


@bp.post("/steps/<int:step_id>/edit")
@require(Permission.CAMPAIGN_EDIT)
def edit_step(step_id: int):
    step = db.session.get(CampaignStep, step_id) or abort(404)
    campaign_id = step.campaign_id
    try:
        service.update_step(_actor(), step_id, request.form.to_dict())
    except service.CampaignError as exc:
        db.session.rollback()
        return _canvas_answer(campaign_id, 422, step_id=step_id, error=str(exc), values=request.form.to_dict())
    return _canvas_answer(campaign_id, step_id=step_id, notice=_("Step %(number)s saved.", number=_number(step)))


@bp.post("/steps/<int:step_id>/move")
@require(Permission.CAMPAIGN_EDIT)
def move_step(step_id: int):
    """Up or down on its path (`offset`), or, dropped by drag, to `index` of a path."""
    step = db.session.get(CampaignStep, step_id) or abort(404)
    campaign_id = step.campaign_id
    form = request.form
    try:
        if form.get("offset") in ("-1", "1"):
            service.move_step_by(_actor(), step_id, int(form["offset"]))
        else:
            parent = form.get("parent", "")
            service.move_step(
                _actor(),
                step_id,
                parent_id=int(parent) if parent.isdigit() else None,
                branch=form.get("branch") or None,
                index=_int("index"),
            )
    except service.CampaignError as exc:
        db.session.rollback()
        return _canvas_answer(campaign_id, 422, step_id=step_id, error=str(exc))
    return _canvas_answer(
        campaign_id, step_id=step_id, notice=_("Step moved: it is now step %(number)s.", number=_number(step))
    )


@bp.post("/steps/<int:step_id>/delete")
@require(Permission.CAMPAIGN_EDIT)
def remove_step(step_id: int):
    step = db.session.get(CampaignStep, step_id) or abort(404)
    campaign_id = step.campaign_id
    number = _number(step)
    try:
        service.remove_step(_actor(), step_id, request.form.get("waiting", ""))
    except service.CampaignError as exc:
        db.session.rollback()
        return _canvas_answer(campaign_id, 422, step_id=step_id, error=str(exc))
    return _canvas_answer(campaign_id, notice=_("Step %(number)s removed.", number=number))


@bp.get("/<int:campaign_id>/steps/<int:step_id>/contacts")
@require(Permission.AUDIENCE_VIEW)
def step_contacts(campaign_id: int, step_id: int):
    """The contacts behind a figure on the canvas (the panel lists them)."""
    return _canvas_answer(campaign_id, **_panel_args() | {"step_id": step_id})


@bp.post("/test-addresses")
@require(Permission.CAMPAIGN_TEST_SEND)
def add_test_address():
    try:
        publishing.add_test_address(_actor(), request.form.get("address", ""))
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(same_site_path(request.form.get("back"), url_for("campaigns.index")))


@bp.post("/test-addresses/<int:address_id>/delete")
@require(Permission.CAMPAIGN_TEST_SEND)
def remove_test_address(address_id: int):
    try:
        publishing.remove_test_address(_actor(), address_id)
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(same_site_path(request.form.get("back"), url_for("campaigns.index")))


@bp.post("/<int:campaign_id>/test-send")
@require(Permission.CAMPAIGN_TEST_SEND)
def test_send(campaign_id: int):
    step_ids = [int(v) for v in request.form.getlist("step") if v.isdigit()]
    contact_id = _int("contact_id") or None
    try:
        run = publishing.start_test_send(_actor(), campaign_id, step_ids, contact_id)
    except service.CampaignError as exc:
        flash(str(exc), "error")
        return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))
    flash(_("Test send queued; the history below shows what was sent to whom."), "success")
    return redirect_after_post(url_for("core.job_status", job_run_id=run.id))


@bp.post("/<int:campaign_id>/publish")
@require(Permission.CAMPAIGN_PUBLISH)
def publish(campaign_id: int):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    raw = request.form.get("start_at", "")
    start_at = None
    if raw:
        campaign = db.session.get(Campaign, campaign_id) or abort(404)
        try:
            start_at = datetime.fromisoformat(raw).replace(tzinfo=ZoneInfo(campaign.timezone))
        except ValueError:
            flash(_("The start time is not a date and time."), "error")
            return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))
    try:
        publishing.publish(_actor(), campaign_id, start_at)
        flash(_("Published."), "success")
    except publishing.ResumeRefused as exc:
        flash(str(RESUME_REFUSALS[exc.code]) % exc.params, "error")
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


@bp.post("/<int:campaign_id>/resume")
@require(Permission.CAMPAIGN_PUBLISH)
def resume(campaign_id: int):
    form = request.form
    try:
        publishing.resume(
            _actor(),
            campaign_id,
            acknowledged=form.get("acknowledge") == "yes",
            max_bounce_rate=form.get("max_bounce_rate", ""),
            min_delivery_rate=form.get("min_delivery_rate", ""),
            limits_reason=form.get("limits_reason", ""),
        )
        flash(_("Resumed: sending continues within seconds."), "success")
    except publishing.ResumeRefused as exc:
        db.session.rollback()
        flash(str(RESUME_REFUSALS[exc.code]) % exc.params, "error")
    except service.CampaignError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


@bp.post("/<int:campaign_id>/status")
@require(Permission.CAMPAIGN_EXECUTE)
def change_status(campaign_id: int):
    action = request.form.get("action", "")
    try:
        publishing.change_status(_actor(), campaign_id, action)
    except service.CampaignError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        if action == "pause":
            flash(str(PAUSED) % publishing.paused_figures(campaign_id), "success")
        else:
            flash(str(STATUS_CHANGED.get(action, _("Saved."))), "success")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


# What a person is told after pausing or cancelling a campaign.
PAUSED = _l(
    "Campaign paused: nothing more is sent until it is resumed. %(pending)s planned messages wait, "
    "%(in_flight)s that were being sent finish, %(waiting)s contacts stay at their steps."
)
STATUS_CHANGED = {
    "cancel": _l("Campaign cancelled."),
}


@bp.post("/steps/<int:step_id>/switch-version")
@require(Permission.CAMPAIGN_EDIT)
def switch_version(step_id: int):
    step = db.session.get(CampaignStep, step_id) or abort(404)
    try:
        service.switch_to_newer_version(_actor(), step_id)
        flash(_("The step now uses the newer approved version; test-send it again before publishing."), "success")
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=step.campaign_id))
