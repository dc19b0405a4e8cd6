"""Dashboard, health check, language choice, job progress and notifications."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template, request, session, url_for
from flask_login import current_user

from portal import notify
from portal.access import Permission, public, require, signed_in
from portal.auth.service import save_locale
from portal.core import service
from portal.htmx import page_or_fragment, redirect_after_post, same_site_path
from portal.queue import enqueue, redis_connection

bp = Blueprint("core", __name__)


@bp.get("/")
@require(Permission.DASHBOARD_VIEW)
def dashboard():
    return render_template("core/dashboard.html", figures=service.overview(current_user))


@bp.get("/healthz")
@public
def healthz():
    status = service.health(redis_connection())
    return jsonify(status), 200 if status["ok"] else 503


@bp.post("/locale")
@public
def set_locale():
    locale = request.form.get("locale", "")
    if locale not in ("zh_CN", "en"):
        abort(400)
    session["locale"] = locale
    if current_user.is_authenticated:
        save_locale(current_user, locale)
    return redirect_after_post(same_site_path(request.form.get("next"), url_for("core.dashboard")))


@bp.get("/jobs/<int:job_run_id>")
@signed_in
def job_status(job_run_id: int):
    try:
        run = service.visible_job_run(current_user, job_run_id)
    except service.JobRunNotVisible:
        abort(404)  # someone else's job is not confirmed to exist
    return page_or_fragment("core/job.html", "core/_job_progress.html", run=run)


@bp.get("/system")
@require(Permission.JOBS_VIEW)
def system():
    status = service.health(redis_connection())
    return render_template("core/system.html", status=status)


@bp.post("/system/diagnostics")
@require(Permission.JOBS_VIEW)
def start_diagnostics():
    run = enqueue("jobs.maintenance.run_diagnostics", kind="diagnostics", actor=current_user)
    return redirect_after_post(url_for("core.job_status", job_run_id=run.id))


@bp.get("/notifications")
@signed_in
def notifications():
    items = notify.recent(current_user.id)
    return render_template("core/notifications.html", items=items)


@bp.post("/notifications/read")
@signed_in
def mark_notifications_read():
    notify.mark_all_read(current_user.id)
    return redirect_after_post(url_for("core.notifications"))
