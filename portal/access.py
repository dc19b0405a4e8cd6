"""Who may do what: the Permission enum, the built-in roles, and the view decorators.

Every view declares its access with `@require(...)` or `@public`; a test walks the URL map
and fails on any endpoint that declares neither. Rules about people rather than roles
(four-eyes review, a recent second factor for high-risk actions) live in the services.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from flask import abort, current_app, redirect, request, url_for
from flask_login import current_user

F = TypeVar("F", bound=Callable[..., Any])


class Permission(enum.StrEnum):
    DASHBOARD_VIEW = "dashboard.view"
    # administration
    USERS_MANAGE = "admin.users"
    ROLES_MANAGE = "admin.roles"
    MARKETING_ROLES_ASSIGN = "admin.assign_marketing_roles"
    SSO_MAPPING_MANAGE = "admin.sso_mapping"
    SETTINGS_MANAGE = "admin.settings"
    AUDIT_VIEW = "admin.audit"
    API_TOKENS_MANAGE = "admin.api_tokens"
    # content
    CONTENT_VIEW = "content.view"
    CONTENT_EDIT = "content.edit"
    CONTENT_REVIEW = "content.review"
    # audience
    AUDIENCE_VIEW = "audience.view"
    AUDIENCE_EDIT = "audience.edit"
    AUDIENCE_IMPORT = "audience.import"
    AUDIENCE_BULK_EDIT = "audience.bulk_edit"  # high risk
    AUDIENCE_BULK_EXPORT = "audience.bulk_export"  # high risk
    PRIVACY_REQUESTS = "audience.privacy"  # high risk
    # campaigns
    CAMPAIGN_VIEW = "campaign.view"
    CAMPAIGN_EDIT = "campaign.edit"
    CAMPAIGN_TEST_SEND = "campaign.test_send"
    CAMPAIGN_EXECUTE = "campaign.execute"
    CAMPAIGN_PUBLISH = "campaign.publish"
    CAMPAIGN_DELETE = "campaign.delete"  # high risk
    # reports
    REPORTS_VIEW = "reports.view"
    REPORTS_EXPORT = "reports.export"
    DATA_EXPORT_BASIC = "reports.basic_export"
    REPORTS_SCHEDULE = "reports.schedule"  # monthly reports built for the owner
    CAMPAIGN_COSTS_EDIT = "reports.costs"  # cost and revenue entries behind CPA and ROI
    BACKUP_EXPORT = "admin.backup_export"
    # development outbox (only registered where a local SMTP sink runs)
    OUTBOX_VIEW = "dev.outbox"
    # system
    JOBS_VIEW = "system.jobs"


# The one list of high-risk permissions: using one needs a second factor confirmed within the
# freshness window (STEP_UP_MINUTES; checked in the services by `check_step_up`).
HIGH_RISK: frozenset[Permission] = frozenset(
    {
        Permission.CAMPAIGN_DELETE,
        Permission.AUDIENCE_BULK_EXPORT,
        Permission.AUDIENCE_BULK_EDIT,
        Permission.PRIVACY_REQUESTS,
    }
)

# The freshness window when no app is configured (STEP_UP_MINUTES overrides it).
STEP_UP_WINDOW = timedelta(minutes=10)
# Session keys: the time (ISO 8601, UTC) of the last interactive sign-in, and of the last second
# factor confirmed (the provider's acr/amr at an SSO sign-in, the break-glass account's TOTP code).
SIGNED_IN_AT_KEY = "signed_in_at"
SECOND_FACTOR_AT_KEY = "second_factor_at"


class ReauthenticationRequired(Exception):
    """The action is high-risk and the person has not confirmed who they are (with a second
    factor, when MFA_REQUIRED) within the freshness window."""


def step_up_window() -> timedelta:
    from flask import current_app, has_app_context

    if has_app_context():
        return timedelta(minutes=current_app.config.get("STEP_UP_MINUTES", 10))
    return STEP_UP_WINDOW


def check_step_up(confirmed_at: datetime | None, now: datetime | None = None) -> None:
    """Services call this before a high-risk action with the time the person last confirmed
    who they are to the standard high-risk actions need (views pass `session_step_up_at()`);
    raises ReauthenticationRequired when there is none within the freshness window, which the
    views turn into a step-up (then back to the action)."""
    now = now or datetime.now(UTC)
    if confirmed_at is None or now - confirmed_at > step_up_window():
        raise ReauthenticationRequired


def session_step_up_at() -> datetime | None:
    """When the signed-in person last confirmed who they are for high-risk actions: the time of
    their last second factor, or (with MFA_REQUIRED off) of their last interactive sign-in or
    second factor, whichever is later."""
    from flask import current_app, session

    keys = [SECOND_FACTOR_AT_KEY]
    if not current_app.config.get("MFA_REQUIRED", True):
        keys.append(SIGNED_IN_AT_KEY)
    times = [datetime.fromisoformat(session[key]) for key in keys if session.get(key)]
    return max(times, default=None)


P = Permission
BUILTIN_ROLES: dict[str, dict[str, Any]] = {
    "administrator": {
        "label": "Administrator",
        "permissions": {
            P.DASHBOARD_VIEW,
            P.USERS_MANAGE,
            P.ROLES_MANAGE,
            P.MARKETING_ROLES_ASSIGN,
            P.SSO_MAPPING_MANAGE,
            P.SETTINGS_MANAGE,
            P.AUDIT_VIEW,
            P.API_TOKENS_MANAGE,
            P.BACKUP_EXPORT,
            P.JOBS_VIEW,
            P.OUTBOX_VIEW,
            P.AUDIENCE_BULK_EXPORT,
            P.AUDIENCE_BULK_EDIT,
            P.PRIVACY_REQUESTS,
            P.CAMPAIGN_DELETE,
            P.AUDIENCE_VIEW,
            P.CAMPAIGN_VIEW,
            P.CONTENT_VIEW,
            P.REPORTS_VIEW,
        },
    },
    "marketing_manager": {
        "label": "Marketing manager",
        "permissions": {
            P.DASHBOARD_VIEW,
            P.MARKETING_ROLES_ASSIGN,
            P.CONTENT_VIEW,
            P.CONTENT_EDIT,
            P.CONTENT_REVIEW,
            P.AUDIENCE_VIEW,
            P.AUDIENCE_EDIT,
            P.AUDIENCE_IMPORT,
            P.AUDIENCE_BULK_EDIT,
            P.AUDIENCE_BULK_EXPORT,
            P.PRIVACY_REQUESTS,
            P.CAMPAIGN_VIEW,
            P.CAMPAIGN_EDIT,
            P.CAMPAIGN_TEST_SEND,
            P.CAMPAIGN_EXECUTE,
            P.CAMPAIGN_PUBLISH,
            P.CAMPAIGN_DELETE,
            P.REPORTS_VIEW,
            P.REPORTS_EXPORT,
            P.REPORTS_SCHEDULE,
            P.CAMPAIGN_COSTS_EDIT,
            P.DATA_EXPORT_BASIC,
            P.OUTBOX_VIEW,
            P.JOBS_VIEW,
        },
    },
    "operations_specialist": {
        "label": "Operations specialist",
        "permissions": {
            P.DASHBOARD_VIEW,
            P.CONTENT_VIEW,
            P.CONTENT_EDIT,
            P.AUDIENCE_VIEW,
            P.AUDIENCE_EDIT,
            P.AUDIENCE_IMPORT,
            P.CAMPAIGN_VIEW,
            P.CAMPAIGN_EDIT,
            P.CAMPAIGN_TEST_SEND,
            P.CAMPAIGN_EXECUTE,
            P.REPORTS_VIEW,
            P.DATA_EXPORT_BASIC,
            P.OUTBOX_VIEW,
        },
    },
    "reviewer": {
        "label": "Reviewer",
        "permissions": {P.DASHBOARD_VIEW, P.CONTENT_VIEW, P.CONTENT_REVIEW},
    },
    "data_analyst": {
        "label": "Data analyst",
        "permissions": {P.DASHBOARD_VIEW, P.REPORTS_VIEW, P.REPORTS_EXPORT, P.CONTENT_VIEW},
    },
}
del P

# Roles a marketing manager may hand out (MARKETING_ROLES_ASSIGN); only admins grant the rest.
MARKETING_ROLES = frozenset({"marketing_manager", "operations_specialist", "reviewer", "data_analyst"})


def has_permission(user: Any, permission: Permission) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and permission in user.permissions


def _mark(view: F, declared: tuple[Permission, ...] | None, any_of: bool = False) -> F:
    view.access_declared = True  # type: ignore[attr-defined]
    view.required_permissions = declared  # type: ignore[attr-defined]
    view.requires_any = any_of  # type: ignore[attr-defined]
    return view


def may_use(view: Any, permissions: frozenset[Permission]) -> bool:
    """Would a signed-in user with `permissions` get past the view's declared access?"""
    required = getattr(view, "required_permissions", None)
    if required is None:
        return True
    if getattr(view, "requires_any", False):
        return any(p in permissions for p in required)
    return all(p in permissions for p in required)


def public(view: F) -> F:
    """Open to anyone, signed in or not (sign-in, tracking, unsubscribe, health)."""
    return _mark(view, None)


def _refuse_anonymous():
    target = url_for("auth.login", next=request.full_path.rstrip("?"))
    if request.headers.get("HX-Request"):
        # A redirect would swap the login page into the middle of another page.
        response = current_app.response_class(status=401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target)


def require(*permissions: Permission) -> Callable[[F], F]:
    """Allow signed-in, active users holding every one of `permissions`; else 403."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            reader = current_user._get_current_object()
            if not reader.is_authenticated:
                return _refuse_anonymous()
            if not all(p in reader.permissions for p in permissions):
                abort(403)
            return view(*args, **kwargs)

        return _mark(guarded, permissions)  # type: ignore[arg-type]

    return decorate


def require_any(*permissions: Permission) -> Callable[[F], F]:
    """Allow signed-in, active users holding at least one of `permissions`; else 403."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            reader = current_user._get_current_object()
            if not reader.is_authenticated:
                return _refuse_anonymous()
            if not any(p in reader.permissions for p in permissions):
                abort(403)
            return view(*args, **kwargs)

        return _mark(guarded, permissions, any_of=True)  # type: ignore[arg-type]

    return decorate


def signed_in(view: F) -> F:
    """Any signed-in user, whatever their roles (their own settings, notifications)."""
    return require()(view)


def undeclared_endpoints(app: Any) -> list[str]:
    """Endpoints whose view declares neither `@require` nor `@public`."""
    return sorted(
        rule.endpoint
        for rule in app.url_map.iter_rules()
        if not getattr(app.view_functions[rule.endpoint], "access_declared", False)
    )
