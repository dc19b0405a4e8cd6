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
from portal.access import Permission, may_use
from portal.labels import label


class NavItem(NamedTuple):
    endpoint: str
    label: object  # a lazy string, translated when rendered


# Each entry shows to whoever passes its view's declared permissions (`access.may_use`), so the
# menu and the routes can never disagree.
NAV_ITEMS: tuple[NavItem, ...] = (
    NavItem("core.dashboard", _l("Dashboard")),
    NavItem("content.index", _l("Content")),
    NavItem("content.review_queue", _l("Review")),
    NavItem("audience.contacts", _l("Audience")),
    NavItem("campaigns.index", _l("Campaigns")),
    NavItem("reports.index", _l("Reports")),
    NavItem("admin.users", _l("Administration")),
    NavItem("outbox.index", _l("Outbox")),
)


def visible_items(app: Flask) -> list[NavItem]:
    if not current_user.is_authenticated:
        return []
    permissions = current_user.permissions
    return [
        item
        for item in NAV_ITEMS
        if item.endpoint in app.view_functions and may_use(app.view_functions[item.endpoint], permissions)
    ]


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
