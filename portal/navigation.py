"""The header navigation, as data: each area adds its entry here; and pages kept rendered.

An entry shows when its endpoint exists in this app and the user holds its permission;
hiding is a convenience only, the routes check permissions themselves.

A page that many people ask for over and over (the reports dashboard) can keep what it renders:
`kept_rendering` keeps a rendering made with a stand-in for the CSRF token, and `with_csrf`
puts the reader's own token in; `page_around` puts such a body into its page, whose frame (the
header with the person's name, menu, unread count and language) is kept per person too, for a
minute at most and only while everything it shows is unchanged."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, NamedTuple

from flask import Flask, render_template, request, session
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup

from portal import notify
from portal.access import Permission, may_use
from portal.labels import label
from portal.recent import Recent
from portal.security import csrf_token


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


# Stands for the reader's CSRF token in a kept rendering; each response gets its own token.
_CSRF_PLACEHOLDER = f"csrf-{secrets.token_hex(16)}"
# Where the body goes in a kept page frame.
_BODY_PLACEHOLDER = f"body-{secrets.token_hex(16)}"
FRAME_MAX_AGE = timedelta(minutes=1)
_frames = Recent()


def _cut(html: str) -> tuple[bytes, ...]:
    """`html` in UTF-8, cut where the CSRF stand-in is: a response joins the pieces with its own
    token, where encoding and searching the page again cost a twentieth of a kept page."""
    return tuple(html.encode().split(_CSRF_PLACEHOLDER.encode()))


def kept_rendering(
    kept: Recent,
    key: Hashable,
    max_age: timedelta,
    version: Hashable,
    template: str,
    context: Callable[[], dict[str, Any]],
) -> tuple[bytes, ...]:
    """`template` rendered with what `context()` gives, as `kept` holds it for `key` (made
    again after `max_age` or when `version` changes), cut where the CSRF token goes."""

    def render() -> tuple[bytes, ...]:
        return _cut(render_template(template, **context(), csrf_token=lambda: _CSRF_PLACEHOLDER))

    return kept.get(key, render, max_age, version)[1]


def with_csrf(rendering: tuple[bytes, ...]) -> bytes:
    """A kept rendering with the reader's own CSRF token in place of the stand-in."""
    return csrf_token().encode().join(rendering)


def page_around(template: str, body: bytes) -> bytes:
    """`template` (a page showing `body` in its content block) for the signed-in reader: its
    frame kept per everything the header shows, so that only the body is new work."""
    if session.get("_flashes"):
        shown = Markup(body.decode())  # noqa: S704 - rendered by Jinja, escaped
        return render_template(template, body=shown).encode()
    reader = current_user._get_current_object()
    key = (
        template,
        str(get_locale()),
        reader.id,
        reader.display_name,
        reader.permissions,
        notify.unread_count(reader.id),
        request.full_path,
        request.endpoint,
    )

    def frame() -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        stand_in = Markup(_BODY_PLACEHOLDER)  # noqa: S704 - a constant of hex digits
        html = render_template(template, body=stand_in, csrf_token=lambda: _CSRF_PLACEHOLDER)
        before, _, after = html.partition(_BODY_PLACEHOLDER)
        return _cut(before), _cut(after)

    before, after = _frames.get(key, frame, FRAME_MAX_AGE)[1]
    token = csrf_token().encode()
    return b"".join((token.join(before), body, token.join(after)))
