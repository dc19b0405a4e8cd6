"""Pages kept rendered, and the tier that answers them before the portal's Flask hooks.

A page that many people ask for over and over (the reports dashboard) keeps what it renders:
`kept_rendering` keeps a rendering made with a stand-in for the CSRF token, and `with_csrf` puts
the reader's own token in; `page_around` puts such a body into its page, whose frame (the header
with the person's name, menu, unread count and language) is kept per person too, for a minute
at most and only while everything it shows is unchanged.

Such a page is a function of a `Reader` (who asks, in which language, for what) and of `make`:
in its Flask view it makes whatever is missing; in `KeptPagesTier` it answers only from what is
kept, or None. The tier wraps the portal's WSGI app and answers a GET for a kept page before
Flask's request set-up, hooks and response: for a kept dashboard, that pipeline cost twice what
the page's own work did, and twenty managers on two cores waited for it. The tier answers only
where Flask would give the same page (as of the session's read: within the second, for a write
by another process), and hands everything else on to Flask:
- the request carries the cookie of a signed-in session, whose row (read as Flask's session
  reads it, or as this process read it within the second with no write of its own since:
  `sessions.recent_signed_in`; a fresh read is handed on, so that Flask never reads it again)
  is neither expired nor due the write of its last-seen time;
- its user is active and signs in through SSO (the break-glass account has set-up steps that
  Flask's hooks enforce: auth.views.force_local_set_up), and holds every permission the page's
  view declares (access.may_use, as `@require` checks them);
- the session holds no message waiting to be shown, and its CSRF token is signed already;
- the page's kept pieces are young enough that its view would show them as they are.
The answer carries the headers Flask's would (security.security_headers). A kept page carries
no rate limit (the tier calls no view). Every hook Flask runs was weighed for the tier, and a
test lists them (tests/reports/test_dashboard_tier.py): a new hook fails it until it is weighed."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Hashable, Iterable
from datetime import timedelta
from typing import Any, NamedTuple

from flask import Flask, render_template, request, session
from flask_babel import get_locale
from flask_login import current_user
from markupsafe import Markup
from werkzeug.datastructures import MultiDict
from werkzeug.http import parse_cookie
from werkzeug.wrappers import Request

from portal import notify, security
from portal.access import Permission, may_use
from portal.auth import sessions
from portal.auth.models import display_name_of
from portal.htmx import is_htmx
from portal.locales import choose_locale
from portal.models_base import utcnow
from portal.recent import Recent

log = logging.getLogger(__name__)


class Reader(NamedTuple):
    """Who asks for a kept page, and how: what its kept pieces are chosen by."""

    user_id: int
    display_name: str
    permissions: frozenset[Permission]
    unread: int  # unread notifications, in the header
    locale: str
    csrf_token: str  # signed
    path: str  # as asked (PATH_INFO, QUERY_STRING)
    query: str
    args: MultiDict[str, str]
    fragment: bool  # an htmx request: the fragment, not the page
    flashes: bool  # messages waiting to be shown once

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


def reader_of_request() -> Reader:
    """The reader of the Flask request under way (signed in: the view required it)."""
    user = current_user._get_current_object()
    return Reader(
        user.id,
        user.display_name,
        user.permissions,
        notify.unread_count(user.id),
        str(get_locale()),
        security.csrf_token(),
        request.environ.get("PATH_INFO", ""),
        request.environ.get("QUERY_STRING", ""),
        request.args,
        is_htmx(),
        bool(session.get("_flashes")),
    )


# A kept page: its bytes for the reader, making what is missing when `make` is true; else
# only from what is kept, or None.
KeptPage = Callable[[Reader, bool], bytes | None]
_pages: dict[str, KeptPage] = {}


def register(endpoint: str, page: KeptPage) -> None:
    """Have the tier answer GETs of `endpoint` (a route without arguments) with `page`."""
    _pages[endpoint] = page


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
    make: bool,
) -> tuple[bytes, ...] | None:
    """`template` rendered with what `context()` gives, as `kept` holds it for `key` (made
    again after `max_age` or when `version` changes), cut where the CSRF token goes. Without
    `make`, only a rendering that would be shown as it is, or None."""
    if not make:
        return kept.young(key, version, max_age)

    def render() -> tuple[bytes, ...]:
        return _cut(render_template(template, **context(), csrf_token=lambda: _CSRF_PLACEHOLDER))

    return kept.get(key, render, max_age, version)[1]


def with_csrf(rendering: tuple[bytes, ...], token: str) -> bytes:
    """A kept rendering with the reader's own CSRF token in place of the stand-in."""
    return token.encode().join(rendering)


def page_around(template: str, body: bytes, reader: Reader, make: bool) -> bytes | None:
    """`template` (a page showing `body` in its content block) for `reader`: its frame kept per
    everything the header shows, so that only the body is new work. Without `make`, only from
    a frame that would be shown as it is, or None."""
    if reader.flashes:
        if not make:
            return None
        shown = Markup(body.decode())  # noqa: S704 - rendered by Jinja, escaped
        return render_template(template, body=shown).encode()
    key = (
        template,
        reader.locale,
        reader.user_id,
        reader.display_name,
        reader.permissions,
        reader.unread,
        reader.path,
        reader.query,
    )

    def frame() -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        stand_in = Markup(_BODY_PLACEHOLDER)  # noqa: S704 - a constant of hex digits
        html = render_template(template, body=stand_in, csrf_token=lambda: _CSRF_PLACEHOLDER)
        before, _, after = html.partition(_BODY_PLACEHOLDER)
        return _cut(before), _cut(after)

    if make:
        before, after = _frames.get(key, frame, FRAME_MAX_AGE)[1]
    else:
        kept = _frames.young(key, None, FRAME_MAX_AGE)
        if kept is None:
            return None
        before, after = kept
    token = reader.csrf_token.encode()
    return b"".join((token.join(before), body, token.join(after)))


WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


class KeptPagesTier:
    """Answers GETs of kept pages where nothing but kept pieces and the session row are needed
    (see the module's text); everything else goes on to `inner`, the portal's app."""

    def __init__(self, app: Flask, inner: WSGIApp):
        self.app = app
        self.inner = inner
        self._paths: dict[str, tuple[str, KeptPage]] | None = None

    def _kept_paths(self) -> dict[str, tuple[str, KeptPage]]:
        """The paths of kept pages: known once every blueprint is registered (the first request)."""
        if self._paths is None:
            self._paths = {
                rule.rule: (rule.endpoint, _pages[rule.endpoint])
                for rule in self.app.url_map.iter_rules()
                if rule.endpoint in _pages and not rule.arguments and "GET" in (rule.methods or ())
            }
        return self._paths

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET":
            kept = self._kept_paths().get(environ.get("PATH_INFO", ""))
            if kept is not None:
                try:
                    answer = self._answer(environ, *kept)
                except Exception:
                    # Flask answers it instead, with its own error page if it fails there too.
                    log.exception("a kept page could not be answered from what is kept")
                    answer = None
                if answer is not None:
                    headers, body = answer
                    start_response("200 OK", headers)
                    return [body]
        return self.inner(environ, start_response)

    def _answer(self, environ: dict[str, Any], endpoint: str, page: KeptPage) -> tuple[list, bytes] | None:
        app = self.app
        # The headers straight from the environ: werkzeug's Headers raises and catches an
        # exception for each one a request lacks.
        session_id = parse_cookie(environ.get("HTTP_COOKIE", "")).get(app.config["SESSION_COOKIE_NAME"])
        if not session_id or sessions.ANONYMOUS_MARK in session_id:
            return None
        with app.app_context():
            found = sessions.recent_signed_in(environ, session_id)
            if found is None or found.user is None:
                return None
            now = utcnow()
            if sessions.expired(app, found, now) or sessions.due_touch(found.last_seen_at, now):
                return None
            user, data = found.user, found.data
            if not user["active"] or user["sso_subject"] is None or data.get("_user_id") != str(user["id"]):
                return None
            if data.get("_flashes") or not may_use(app.view_functions[endpoint], found.permissions):
                return None
            token = security.signed_csrf_token(data.get("csrf_token"))
            if token is None:
                return None
            locale = choose_locale(user["locale"], data.get("locale"), environ.get("HTTP_ACCEPT_LANGUAGE", ""))
            reader = Reader(
                user["id"],
                display_name_of(user["name"], user["email"]),
                found.permissions,
                found.unread,
                str(locale),
                token,
                environ.get("PATH_INFO", ""),
                environ.get("QUERY_STRING", ""),
                Request(environ).args,
                environ.get("HTTP_HX_REQUEST") == "true",
                False,
            )
            body = page(reader, False)
            if body is None:
                return None
            production = app.config["PORTAL_ENV"] == "production"
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        headers += security.security_headers({"content-type", "content-length"}, production, personal=True)
        return headers, body
