"""Campaign pages: the list, settings, the flow (diagram and steps) and its validation."""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from portal import audit, labels
from portal import settings as app_settings
from portal.access import Permission, require
from portal.audience.models import Segment
from portal.campaigns import diagram, monitoring, publishing, service
from portal.campaigns.models import Campaign, CampaignStep
from portal.content.models import Asset, AssetVersion, VersionStatus
from portal.extensions import db
from portal.htmx import redirect_after_post, same_site_path

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
        return str(_("Wait %(days)s d %(hours)s h", days=config.get("days", 0), hours=config.get("hours", 0)))
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
    }


@bp.get("/")
@require(Permission.CAMPAIGN_VIEW)
def index():
    campaigns = list(db.session.scalars(select(Campaign).order_by(Campaign.updated_at.desc())))
    return render_template("campaigns/index.html", campaigns=campaigns)


@bp.route("/new", methods=["GET", "POST"])
@require(Permission.CAMPAIGN_EDIT)
def new():
    if request.method == "POST":
        try:
            campaign = service.create_campaign(_actor(), request.form.to_dict())
        except service.CampaignError as exc:
            flash(str(exc), "error")
        else:
            return redirect_after_post(url_for("campaigns.show", campaign_id=campaign.id))
    return render_template("campaigns/new.html", segments=_segments()), 422 if request.method == "POST" else 200


def _segments() -> list[Segment]:
    return list(db.session.scalars(select(Segment).order_by(Segment.name)))


def _approved_versions() -> list[AssetVersion]:
    return list(
        db.session.scalars(
            select(AssetVersion).join(Asset).where(AssetVersion.status == VersionStatus.APPROVED).order_by(Asset.name)
        )
    )


@bp.get("/<int:campaign_id>")
@require(Permission.CAMPAIGN_VIEW)
def show(campaign_id: int):
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    svg = diagram.flow_svg(campaign, step_label, campaign.name, (str(_("yes")), str(_("no"))))
    return render_template(
        "campaigns/show.html",
        campaign=campaign,
        diagram=Markup(svg),  # noqa: S704 - diagram.flow_svg escapes every piece of text
        problems=service.validate(campaign.id),
        untested=publishing.untested_steps(campaign),
        audience=publishing.audience_preview(campaign),
        test_addresses=publishing.test_addresses(current_user.id),
        history=publishing.test_history(campaign.id),
        steps=service.in_flow_order(campaign),
        segments=_segments(),
        versions=_approved_versions(),
        branches=[s for s in campaign.steps if s.kind == "branch"],
        conditions=CONDITION_LABELS,
        actions=ACTION_LABELS,
        kinds=KIND_LABELS,
        metrics=service.GOAL_METRICS,
        alert_min_attempts=app_settings.get("alerts.min_attempts"),
        alert_defaults={
            "max_bounce_rate": app_settings.get("alerts.max_bounce_rate"),
            "min_delivery_rate": app_settings.get("alerts.min_delivery_rate"),
        },
        **_progress_context(campaign),
    )


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
@require(Permission.CAMPAIGN_VIEW)
def progress(campaign_id: int):
    """The sending progress, polled by the campaign page while the campaign runs."""
    campaign = db.session.get(Campaign, campaign_id) or abort(404)
    return render_template("campaigns/_progress.html", campaign=campaign, **_progress_context(campaign))


@bp.post("/<int:campaign_id>/settings")
@require(Permission.CAMPAIGN_EDIT)
def settings(campaign_id: int):
    try:
        service.update_settings(_actor(), campaign_id, request.form.to_dict())
        flash(_("Campaign saved."), "success")
    except service.CampaignError as exc:
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
    form = request.form
    kind = form.get("kind", "")
    config: dict = {}
    if kind == "delay":
        config = {"days": _int("days"), "hours": _int("hours"), "relative_to": form.get("relative_to", "previous")}
    elif kind == "branch":
        config = {
            "condition": form.get("condition", ""),
            "value": form.get("value", ""),
            "window_days": _int("window_days", 3),
        }
    elif kind == "action":
        config = {"type": form.get("action_type", ""), "value": form.get("value", "")}
    elif kind == "exit":
        config = {"reason": form.get("reason", "converted"), "value": form.get("value", "")}
    if kind == "message" and _int("version_b"):
        config["ab"] = {
            "version_b": _int("version_b"),
            "share": _int("ab_share", 20),
            "window_hours": _int("ab_window_hours", 24),
            "metric": form.get("ab_metric", "clicks"),
        }
    parent = form.get("parent", "")
    parent_id, branch = (int(parent.split(":")[0]), parent.split(":")[1]) if ":" in parent else (None, None)
    version_id = _int("content_version_id") or None
    channel = ""
    if version_id:
        version = db.session.get(AssetVersion, version_id)
        channel = version.asset.kind if version else ""
    try:
        service.add_step(
            _actor(),
            campaign_id,
            kind,
            config,
            parent_id=parent_id,
            branch=branch,
            channel=channel,
            content_version_id=version_id,
        )
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


@bp.post("/steps/<int:step_id>/delete")
@require(Permission.CAMPAIGN_EDIT)
def remove_step(step_id: int):
    step = db.session.get(CampaignStep, step_id) or abort(404)
    campaign_id = step.campaign_id
    try:
        service.remove_step(_actor(), step_id)
    except service.CampaignError as exc:
        flash(str(exc), "error")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


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
        flash(str(exc), "error")
    else:
        flash(str(STATUS_CHANGED.get(action, _("Saved."))), "success")
    return redirect_after_post(url_for("campaigns.show", campaign_id=campaign_id))


# What a person is told after pausing, resuming or cancelling a campaign.
STATUS_CHANGED = {
    "pause": _l("Campaign paused: nothing more is sent until it is resumed."),
    "resume": _l("Campaign resumed: sending goes on where it stopped."),
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
