"""Users, roles, SSO group mappings, and reading the audit trail.

Grants keep their source: roles from IdP groups ("sso") are replaced at every sign-in,
roles given in the portal ("manual") stay until someone removes them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, insert, or_, select

from portal import audit, settings
from portal.access import BUILTIN_ROLES, MARKETING_ROLES, Permission
from portal.audit import AuditEvent
from portal.auth.models import Role, SsoGroupMapping, User, user_roles
from portal.auth.sessions import end_sessions_of
from portal.delivery.pacing import parse_domain_limits
from portal.extensions import db
from portal.labels import join_list, label
from portal.paging import Page, paginate
from portal.refusals import Refusal

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class AdminError(Refusal):
    """A refused administrative change: a code and parameters, made a sentence when shown."""

    messages = {
        "may_not_assign": _l("You may not assign roles."),
        "may_not_assign_these": _l("You may not assign: %(roles)s"),
        "cannot_deactivate_self": _l("You cannot deactivate yourself."),
        "no_such_user": _l("No such user."),
        "unknown_permissions": _l("Unknown permissions: %(permissions)s"),
        "bad_role_name": _l("A role name is 2-64 lower-case letters, digits or underscores."),
        "role_exists": _l("A role with this name exists already."),
        "no_such_role": _l("No such role."),
        "builtin_role": _l("Built-in roles are defined by the portal and cannot be edited."),
        "group_missing": _l("Give the group's name as the identity provider sends it."),
        "no_such_mapping": _l("No such mapping."),
        "unknown_setting": _l("Unknown setting."),
        "setting_number": _l("%(setting)s: a whole number from %(low)s to %(high)s is needed."),
        "setting_text": _l("%(setting)s: write a value."),
        "setting_domains": _l(
            "%(setting)s: write domain=messages per minute pairs, separated by commas (qq.com=600); "
            "“%(pair)s” is not one."
        ),
    }

    def sentence_params(self) -> dict:
        params = dict(self.params)
        if "roles" in params:
            params["roles"] = join_list(label("role", name) for name in params["roles"])
        if "permissions" in params:
            params["permissions"] = join_list(params["permissions"])
        if "setting" in params:
            params["setting"] = label("setting", params["setting"])
        return params


def ensure_builtin_roles() -> None:
    """Create the built-in roles, and bring their permissions up to date with the code.

    Idempotent: run after every migration and by the demo-data loader."""
    existing = {role.name: role for role in db.session.scalars(select(Role))}
    for name, spec in BUILTIN_ROLES.items():
        permissions = sorted(str(p) for p in spec["permissions"])
        role = existing.get(name)
        if role is None:
            db.session.add(Role(name=name, label=spec["label"], permissions=permissions, builtin=True))
        elif role.permissions != permissions or not role.builtin:
            role.permissions = permissions
            role.builtin = True
    db.session.commit()


# --- grants ---------------------------------------------------------------------------------


def grants_of(user_id: int) -> dict[str, str]:
    """role name -> source ("sso" or "manual")."""
    rows = db.session.execute(
        select(Role.name, user_roles.c.source)
        .join(user_roles, user_roles.c.role_id == Role.id)
        .where(user_roles.c.user_id == user_id)
    )
    return {name: source for name, source in rows}


def replace_grants(user_id: int, role_ids: set[int], source: str) -> None:
    """Make the user's grants of `source` exactly `role_ids` (other-source grants untouched)."""
    db.session.execute(delete(user_roles).where(user_roles.c.user_id == user_id, user_roles.c.source == source))
    already = set(db.session.scalars(select(user_roles.c.role_id).where(user_roles.c.user_id == user_id)))
    for role_id in sorted(role_ids - already):
        db.session.execute(insert(user_roles).values(user_id=user_id, role_id=role_id, source=source))


def assignable_roles(actor: User) -> list[Role]:
    """Roles the actor may grant or take away: all for administrators, the marketing roles
    for managers."""
    roles = list(db.session.scalars(select(Role).order_by(Role.builtin.desc(), Role.name)))
    if actor.can(Permission.ROLES_MANAGE):
        return roles
    if actor.can(Permission.MARKETING_ROLES_ASSIGN):
        return [role for role in roles if role.name in MARKETING_ROLES]
    return []


def set_manual_roles(actor: User, user_id: int, role_names: set[str]) -> None:
    """Set the portal-granted roles of a user, within what the actor may assign.

    Roles outside the actor's reach keep their state. A user left with no role at all is
    signed out everywhere."""
    user = _user(user_id)
    allowed = {role.name: role for role in assignable_roles(actor)}
    if not allowed:
        raise AdminError("may_not_assign")
    unknown = role_names - set(allowed)
    if unknown:
        raise AdminError("may_not_assign_these", roles=sorted(unknown))
    before = grants_of(user_id)
    kept = {name for name, source in before.items() if source == "manual" and name not in allowed}
    wanted_ids = {role.id for role in db.session.scalars(select(Role).where(Role.name.in_(role_names | kept)))}
    replace_grants(user_id, wanted_ids, "manual")
    db.session.flush()
    after = grants_of(user_id)
    if after != before:
        audit.record(
            actor,
            "user.roles_changed",
            f"user:{user.id}",
            {"email": user.email, "before": before, "after": after},
        )
    if not after:
        end_sessions_of(user.id)
    db.session.commit()


def set_user_active(actor: User, user_id: int, active: bool) -> None:
    user = _user(user_id)
    if user.id == actor.id and not active:
        raise AdminError("cannot_deactivate_self")
    if user.active == active:
        return
    user.active = active
    if not active:
        end_sessions_of(user.id)
    audit.record(
        actor,
        "user.activated" if active else "user.deactivated",
        f"user:{user.id}",
        {"email": user.email},
    )
    db.session.commit()


def _user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise AdminError("no_such_user")
    return user


def search_users(text: str = "", page: int = 1, per_page: int = 25) -> Page:
    query = select(User).order_by(User.email)
    if text:
        like = f"%{text.strip()}%"
        query = query.where(or_(User.email.ilike(like), User.name.ilike(like)))
    return paginate(query, page, per_page)


# --- roles ----------------------------------------------------------------------------------


def save_custom_role(actor: User, name: str, label: str, permissions: set[str], role_id: int | None = None) -> Role:
    known = {str(p) for p in Permission}
    if not permissions <= known:
        raise AdminError("unknown_permissions", permissions=sorted(permissions - known))
    if role_id is None:
        if not ROLE_NAME.match(name):
            raise AdminError("bad_role_name")
        if db.session.scalar(select(Role).where(Role.name == name)):
            raise AdminError("role_exists")
        role = Role(name=name, label=label.strip() or name, permissions=sorted(permissions), builtin=False)
        db.session.add(role)
        db.session.flush()
        audit.record(actor, "role.created", f"role:{role.name}", {"permissions": role.permissions})
    else:
        role = db.session.get(Role, role_id)
        if role is None:
            raise AdminError("no_such_role")
        if role.builtin:
            raise AdminError("builtin_role")
        before = list(role.permissions)
        role.label = label.strip() or role.name
        role.permissions = sorted(permissions)
        audit.record(
            actor,
            "role.changed",
            f"role:{role.name}",
            {"before": before, "after": role.permissions},
        )
    db.session.commit()
    return role


def list_roles() -> list[Role]:
    return list(db.session.scalars(select(Role).order_by(Role.builtin.desc(), Role.name)))


# --- SSO group mapping ----------------------------------------------------------------------


def list_mappings() -> list[SsoGroupMapping]:
    return list(db.session.scalars(select(SsoGroupMapping).order_by(SsoGroupMapping.group_name)))


def add_mapping(actor: User | None, group_name: str, role_name: str) -> SsoGroupMapping:
    group_name = group_name.strip()
    if not group_name:
        raise AdminError("group_missing")
    role = db.session.scalar(select(Role).where(Role.name == role_name))
    if role is None:
        raise AdminError("no_such_role")
    existing = db.session.scalar(
        select(SsoGroupMapping).where(SsoGroupMapping.group_name == group_name, SsoGroupMapping.role_id == role.id)
    )
    if existing:
        return existing
    mapping = SsoGroupMapping(group_name=group_name, role_id=role.id)
    db.session.add(mapping)
    db.session.flush()
    audit.record(actor, "sso_mapping.added", f"group:{group_name}", {"role": role.name})
    _resync_group_members(group_name)
    db.session.commit()
    return mapping


def remove_mapping(actor: User, mapping_id: int) -> None:
    mapping = db.session.get(SsoGroupMapping, mapping_id)
    if mapping is None:
        raise AdminError("no_such_mapping")
    group_name = mapping.group_name
    audit.record(actor, "sso_mapping.removed", f"group:{group_name}", {"role": mapping.role.name})
    db.session.delete(mapping)
    db.session.flush()
    _resync_group_members(group_name)
    db.session.commit()


def _resync_group_members(group_name: str) -> None:
    """Apply a mapping change now to everyone whose last known groups include the group;
    whoever is left with no role is signed out everywhere."""
    for user in db.session.scalars(select(User).where(User.sso_subject.is_not(None))):
        if group_name not in (user.sso_groups or []):
            continue
        before = grants_of(user.id)
        replace_grants(user.id, roles_for_groups(user.sso_groups), "sso")
        db.session.flush()
        after = grants_of(user.id)
        if after != before:
            audit.record(None, "user.roles_synced", f"user:{user.id}", {"before": before, "after": after})
        if not after:
            end_sessions_of(user.id)


def roles_for_groups(groups: list[str]) -> set[int]:
    if not groups:
        return set()
    return set(db.session.scalars(select(SsoGroupMapping.role_id).where(SsoGroupMapping.group_name.in_(groups))))


# --- portal settings ------------------------------------------------------------------------

# What the settings page edits, and the range each number may take.
SETTING_RANGES: dict[str, tuple[int, int]] = {
    "scoring.base_score": (0, 1000),
    "scoring.mql_threshold": (1, 1000),
    "lifecycle.new_days": (1, 3650),
    "lifecycle.growing_min_purchases": (1, 1000),
    "lifecycle.stable_min_purchases": (1, 1000),
    "lifecycle.dormant_days": (1, 3650),
    "sending.max_per_contact_per_day": (0, 100),
    "sending.max_emails_per_prospect_per_week": (0, 100),
    "alerts.min_attempts": (1, 1_000_000),
    "alerts.min_delivery_rate": (0, 100),
    "alerts.max_bounce_rate": (0, 100),
    "wecom.max_per_customer_per_day": (0, 100),
    "wecom.max_per_customer_per_month": (0, 1000),
    "pacing.robot_per_minute": (0, 1000),
    "pacing.sms_per_minute": (0, 1_000_000),
}
EDITABLE_SETTINGS = (*SETTING_RANGES, "scoring.mql_tag", "alerts.auto_pause", "pacing.email_domains")


def current_settings() -> dict[str, object]:
    return {key: settings.get(key) for key in EDITABLE_SETTINGS}


def save_settings(actor: User, raw: dict[str, str]) -> list[str]:
    """Check every value first, then store the changed ones (each change audited by
    settings.set_value); returns the keys that changed. Nothing is stored if one is wrong."""
    cleaned: dict[str, object] = {}
    for key, (low, high) in SETTING_RANGES.items():
        text = str(raw.get(key, "")).strip()
        if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
            raise AdminError("setting_number", setting=key, low=low, high=high)
        cleaned[key] = int(text)
    tag = str(raw.get("scoring.mql_tag", "")).strip()[:100]
    if not tag:
        raise AdminError("setting_text", setting="scoring.mql_tag")
    cleaned["scoring.mql_tag"] = tag
    cleaned["alerts.auto_pause"] = raw.get("alerts.auto_pause") in ("1", "on", "true", True)
    domains = str(raw.get("pacing.email_domains", "")).strip()
    try:
        limits = parse_domain_limits(domains)
    except ValueError as bad:
        raise AdminError("setting_domains", setting="pacing.email_domains", pair=str(bad)[:100]) from None
    cleaned["pacing.email_domains"] = ", ".join(f"{domain}={rate}" for domain, rate in limits.items())
    changed = [key for key, value in cleaned.items() if settings.get(key) != value]
    for key in changed:
        settings.set_value(actor, key, cleaned[key])
    db.session.commit()
    return changed


@dataclass(frozen=True)
class StepUpPolicy:
    """What high-risk actions ask of a person: shown on the settings page, set in the
    configuration (environment or instance/config.py), not in the portal."""

    mfa_required: bool
    window_minutes: int
    accepted_acr: list[str]
    accepted_amr: list[str]
    high_risk: list[Permission]


def step_up_policy() -> StepUpPolicy:
    from flask import current_app

    from portal.access import HIGH_RISK
    from portal.auth.mfa import setting_values

    config = current_app.config
    return StepUpPolicy(
        mfa_required=bool(config["MFA_REQUIRED"]),
        window_minutes=int(config["STEP_UP_MINUTES"]),
        accepted_acr=sorted(setting_values(config["OIDC_MFA_ACR"])),
        accepted_amr=sorted(setting_values(config["OIDC_MFA_AMR"])),
        high_risk=sorted(HIGH_RISK, key=lambda permission: list(Permission).index(permission)),
    )


# --- audit trail ----------------------------------------------------------------------------


@dataclass
class AuditFilter:
    who: str = ""
    action: str = ""
    target: str = ""
    date_from: datetime | None = None
    date_to: datetime | None = None


def audit_query(filters: AuditFilter):
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
    if filters.who:
        query = query.where(AuditEvent.actor_label.ilike(f"%{filters.who.strip()}%"))
    if filters.action:
        query = query.where(AuditEvent.action.ilike(f"{filters.action.strip()}%"))
    if filters.target:
        query = query.where(AuditEvent.target.ilike(f"%{filters.target.strip()}%"))
    if filters.date_from:
        query = query.where(AuditEvent.created_at >= filters.date_from)
    if filters.date_to:
        query = query.where(AuditEvent.created_at < filters.date_to)
    return query


def search_audit(filters: AuditFilter, page: int = 1, per_page: int = 50) -> Page:
    return paginate(audit_query(filters), page, per_page)


def iter_audit(filters: AuditFilter, batch: int = 1000):
    """Every matching event, streamed in batches (for the CSV export)."""
    yield from db.session.scalars(audit_query(filters).execution_options(yield_per=batch))


def distinct_actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))
