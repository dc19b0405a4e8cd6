"""Administration: users and their roles, custom roles, SSO group mapping, the audit log."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    flash,
    render_template,
    request,
    url_for,
)
from flask_babel import get_timezone
from flask_babel import gettext as _
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from portal import audit, labels
from portal.access import Permission, require, require_any
from portal.admin import service
from portal.admin.forms import MappingForm, RoleForm, UserRolesForm
from portal.auth import oidc
from portal.auth import service as auth_service
from portal.auth.models import User
from portal.csv_download import csv_response
from portal.extensions import db
from portal.htmx import page_or_fragment, redirect_after_post
from portal.labels import audit_action_label, audit_sentence, audit_target_label, label
from portal.models_base import utcnow

bp = Blueprint("admin", __name__)

# The SSO mapping page lists the groups that arrived at sign-ins this recently.
GROUPS_SEEN_WINDOW = timedelta(days=30)


def _actor():
    return current_user._get_current_object()


@bp.get("/users")
@require_any(Permission.USERS_MANAGE, Permission.MARKETING_ROLES_ASSIGN)
def users():
    page = service.search_users(request.args.get("q", ""), request.args.get("page", 1, type=int))
    return page_or_fragment("admin/users.html", "admin/_users_table.html", page=page, q=request.args.get("q", ""))


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@require_any(Permission.USERS_MANAGE, Permission.MARKETING_ROLES_ASSIGN)
def user_detail(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    assignable = service.assignable_roles(_actor())
    grants = service.grants_of(user.id)
    form = UserRolesForm()
    form.roles.choices = [SelectChoice(role.name, label("role", role.name, role.label)) for role in assignable]
    if request.method == "GET":
        form.roles.data = [name for name, source in grants.items() if source == "manual"]
    if form.validate_on_submit():
        try:
            service.set_manual_roles(_actor(), user.id, set(form.roles.data or []))
        except service.AdminError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            flash(_("Roles saved."), "success")
            return redirect_after_post(url_for("admin.user_detail", user_id=user.id))
    return render_template("admin/user.html", user=user, grants=grants, form=form, locked=auth_service.is_locked(user))


@bp.post("/users/<int:user_id>/active")
@require(Permission.USERS_MANAGE)
def set_active(user_id: int):
    active = request.form.get("active") == "1"
    try:
        service.set_user_active(_actor(), user_id, active)
    except service.AdminError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        flash(
            _("User reactivated.") if active else _("User deactivated and signed out everywhere."),
            "success",
        )
    return redirect_after_post(url_for("admin.user_detail", user_id=user_id))


@bp.post("/users/<int:user_id>/unlock")
@require(Permission.USERS_MANAGE)
def lift_lockout(user_id: int):
    auth_service.lift_lockout(_actor(), user_id)
    flash(_("The sign-in lockout is lifted."), "success")
    return redirect_after_post(url_for("admin.user_detail", user_id=user_id))


@bp.get("/roles")
@require(Permission.ROLES_MANAGE)
def roles():
    return render_template("admin/roles.html", roles=service.list_roles())


def _role_form(role=None) -> RoleForm:
    form = RoleForm(obj=role)
    form.permissions.choices = [
        SelectChoice(
            str(p), label("permission", p), render_kw={"title": str(labels.PERMISSION_DESCRIPTIONS.get(p, ""))}
        )
        for p in Permission
    ]
    if role is not None and request.method == "GET":
        form.permissions.data = list(role.permissions)
    return form


@bp.route("/roles/new", methods=["GET", "POST"])
@require(Permission.ROLES_MANAGE)
def new_role():
    form = _role_form()
    if form.validate_on_submit():
        try:
            service.save_custom_role(_actor(), form.name.data, form.label.data, set(form.permissions.data or []))
        except service.AdminError as exc:
            db.session.rollback()
            form.name.errors = [str(exc)]
        else:
            flash(_("Role created."), "success")
            return redirect_after_post(url_for("admin.roles"))
    return render_template("admin/role_form.html", form=form, role=None), 422 if form.is_submitted() else 200


@bp.route("/roles/<int:role_id>", methods=["GET", "POST"])
@require(Permission.ROLES_MANAGE)
def edit_role(role_id: int):
    from portal.auth.models import Role

    role = db.session.get(Role, role_id) or abort(404)
    form = _role_form(role)
    if form.validate_on_submit():
        try:
            service.save_custom_role(
                _actor(),
                role.name,
                form.label.data,
                set(form.permissions.data or []),
                role_id=role.id,
            )
        except service.AdminError as exc:
            db.session.rollback()
            form.label.errors = [str(exc)]
        else:
            flash(_("Role saved."), "success")
            return redirect_after_post(url_for("admin.roles"))
    return render_template("admin/role_form.html", form=form, role=role), 422 if form.is_submitted() else 200


@bp.route("/sso-mapping", methods=["GET", "POST"])
@require(Permission.SSO_MAPPING_MANAGE)
def mappings():
    form = MappingForm()
    form.role.choices = [SelectChoice(role.name, label("role", role.name, role.label)) for role in service.list_roles()]
    if form.validate_on_submit():
        try:
            service.add_mapping(_actor(), form.group_name.data, form.role.data)
        except service.AdminError as exc:
            db.session.rollback()
            form.group_name.errors = [str(exc)]
        else:
            flash(_("Mapping added. It applies at once to people known to be in this group."), "success")
            return redirect_after_post(url_for("admin.mappings"))
    return render_template(
        "admin/mappings.html",
        form=form,
        mappings=service.list_mappings(),
        groups_seen=auth_service.groups_seen(utcnow() - GROUPS_SEEN_WINDOW),
        groups_seen_days=GROUPS_SEEN_WINDOW.days,
        callback_url=oidc.callback_url(),
        post_logout_url=oidc.post_logout_url(),
    ), (422 if form.is_submitted() else 200)


@bp.post("/sso-mapping/<int:mapping_id>/delete")
@require(Permission.SSO_MAPPING_MANAGE)
def delete_mapping(mapping_id: int):
    try:
        service.remove_mapping(_actor(), mapping_id)
    except service.AdminError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect_after_post(url_for("admin.mappings"))


@bp.route("/settings", methods=["GET", "POST"])
@require(Permission.SETTINGS_MANAGE)
def settings_page():
    from portal.content import service as content_service

    values = service.current_settings()
    status, refused = 200, None
    if request.method == "POST":
        submitted = request.form.to_dict()
        try:
            changed = service.save_settings(_actor(), submitted)
        except service.AdminError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            values, status = {**values, **submitted, "alerts.auto_pause": "alerts.auto_pause" in submitted}, 422
            refused = {"setting": exc.params.get("setting"), "message": str(exc)}
        else:
            flash(
                _("Settings saved: %(count)s changed.", count=len(changed)) if changed else _("Nothing changed."),
                "success",
            )
            return redirect_after_post(url_for("admin.settings_page"))
    return render_template(
        "admin/settings.html",
        values=values,
        ranges=service.SETTING_RANGES,
        refused=refused,
        words=content_service.list_words(),
        link_rules=content_service.list_link_rules(),
        step_up=service.step_up_policy(),
    ), status


def _parse_day(raw: str | None) -> datetime | None:
    """The start of a day as the person sees it: in the portal's display time zone (the table
    shows times there), not in the server's own zone."""
    try:
        day = datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None
    if day is None:
        return None
    return day.replace(tzinfo=ZoneInfo(str(get_timezone()))) if day.tzinfo is None else day


def _audit_filters() -> service.AuditFilter:
    date_to = _parse_day(request.args.get("to"))
    return service.AuditFilter(
        who=request.args.get("who", ""),
        action=request.args.get("action", ""),
        target=request.args.get("target", ""),
        date_from=_parse_day(request.args.get("from")),
        date_to=date_to + timedelta(days=1) if date_to else None,  # the "to" day is included
    )


@bp.get("/audit")
@require(Permission.AUDIT_VIEW)
def audit_log():
    page = service.search_audit(_audit_filters(), request.args.get("page", 1, type=int))
    return page_or_fragment(
        "admin/audit.html",
        "admin/_audit_table.html",
        page=page,
        actions=service.distinct_actions(),
        args=request.args,
    )


@bp.get("/audit.csv")
@require(Permission.AUDIT_VIEW)
def audit_csv():
    """The events the page shows (same filters), for Excel: UTF-8 with a BOM, times in the
    display time zone with its offset, headers and actions in the reader's language."""
    filters = _audit_filters()
    zone = ZoneInfo(str(get_timezone()))
    audit.record(_actor(), "audit.exported", "audit", {k: v for k, v in request.args.items() if k != "page"})
    db.session.commit()
    headers = [_("Time"), _("Who"), _("Action"), _("Object"), _("Details")]
    rows = (
        (
            event.created_at.astimezone(zone).isoformat(sep=" ", timespec="seconds"),
            event.actor_label,
            audit_action_label(event.action),
            audit_target_label(event.target),
            audit_sentence(event.action, event.details),
        )
        for event in service.iter_audit(filters)
    )
    return csv_response(headers, rows, "audit-log.csv")
