"""The header navigation, as data: each area adds its entry here.

An entry shows when its endpoint exists in this app and the user holds its permission;
hiding is a convenience only, the routes check permissions themselves."""

from __future__ import annotations

from typing import NamedTuple

from flask import Flask
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from portal import notify
from portal.access import Permission
from portal.labels import label


class NavItem(NamedTuple):
    endpoint: str
    label: object  # a lazy string, translated when rendered
    permission: Permission


NAV_ITEMS: tuple[NavItem, ...] = (
    NavItem("core.dashboard", _l("Dashboard"), Permission.DASHBOARD_VIEW),
    NavItem("content.index", _l("Content"), Permission.CONTENT_VIEW),
    NavItem("content.review_queue", _l("Review"), Permission.CONTENT_REVIEW),
    NavItem("audience.contacts", _l("Audience"), Permission.AUDIENCE_VIEW),
    NavItem("campaigns.index", _l("Campaigns"), Permission.CAMPAIGN_VIEW),
    NavItem("reports.index", _l("Reports"), Permission.REPORTS_VIEW),
    NavItem("admin.users", _l("Administration"), Permission.MARKETING_ROLES_ASSIGN),
    NavItem("outbox.index", _l("Outbox"), Permission.OUTBOX_VIEW),
)


def visible_items(app: Flask) -> list[NavItem]:
    if not current_user.is_authenticated:
        return []
    return [item for item in NAV_ITEMS if item.endpoint in app.view_functions and current_user.can(item.permission)]


def register(app: Flask) -> None:
    @app.context_processor
    def inject_navigation():
        return {
            "nav_items": lambda: visible_items(app),
            "has_endpoint": lambda name: name in app.view_functions,
            "unread_notifications": lambda: notify.unread_count(current_user.id),
            "role_label": lambda name, fallback=None: label("role", name, fallback),
            "current_locale": lambda: "zh_CN" if get_locale().language == "zh" else "en",
            "Permission": Permission,
        }
