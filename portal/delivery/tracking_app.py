"""The tracking tier: the open pixel and the click redirect, answered before the portal's pages.

Mail clients fetch the pixel of every message opened (Apple Mail Privacy Protection fetches
them all as the mail is delivered), so these two URLs take the portal's heaviest traffic, and
none of it is a person's visit: no session, no user, no CSRF token, no language, no rate limit,
no page. Through the portal's Flask app each request paid for all of those hooks; here it
pays for a route match, the token's signature check and one Redis round trip (the tracking
intake, portal/delivery/intake.py). The signed token is the only credential. Nor does it set
up an app context (its push and teardown cost as much as the rest of the request together):
only when Redis cannot take the event is one set up, to write it to the database at once.

`TrackingApp` wraps the portal's WSGI app (create_app installs it): `/t/o/...` and
`/t/c/...` are answered here, everything else (and anything not signed by us, such as a
forged click link) goes on to the portal, whose 404 page speaks the reader's language. A
deployment may give tracking hosts of their own (a tracking domain): they run the same
`wsgi:app` and are sent only `/t/` by the proxy.

A GET never changes state beyond recording an open or click (mail scanners prefetch links).
"""

from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.urls import iri_to_uri
from werkzeug.wrappers import Response

from portal.audience.models import EventKind
from portal.delivery import intake, tracking
from portal.delivery.tokens import Recipient, tracking_tokens
from portal.extensions import db
from portal.security import HSTS

log = logging.getLogger(__name__)

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0, private",
    "Pragma": "no-cache",
    "Expires": "0",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
}
ROUTES = Map(
    [
        Rule("/t/o/<token>.gif", endpoint="open", methods=["GET"]),
        Rule("/t/c/<click_token>/<link_token>", endpoint="click", methods=["GET"]),
    ]
)
# The routes' usual shapes, matched as werkzeug matches them (a segment is [^/]+) in a
# microsecond instead of its 30; any other path under /t/ goes through the map.
OPEN_PATH = re.compile(r"/t/o/([^/]+)\.gif")
CLICK_PATH = re.compile(r"/t/c/([^/]+)/([^/]+)")

WSGIApp = Callable[[dict[str, Any], Callable], Iterable[bytes]]


@functools.lru_cache(maxsize=4096)
def _location(url: str) -> str:
    """The Location of a redirect to `url` (12 µs of werkzeug's quoting, done once per link)."""
    return iri_to_uri(url)


def no_store(response: Response) -> Response:
    """Answers about one recipient are never kept by a cache, nor indexed (the unsubscribe
    pages use it too)."""
    response.headers.update(NO_STORE)
    return response


class TrackingApp:
    """WSGI: the open pixel and the click redirect; every other request goes to `portal`."""

    def __init__(self, app: Flask, portal: WSGIApp) -> None:
        self.app = app
        self.portal = portal
        self.headers = list(NO_STORE.items())
        if app.config["PORTAL_ENV"] == "production":
            self.headers.append(("Strict-Transport-Security", HSTS))
        self.pixel_headers = [("Content-Type", "image/gif"), ("Content-Length", str(len(PIXEL))), *self.headers]
        # Matching with the path and method given is safe from any thread.
        self.routes = ROUTES.bind("tracking")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/t/"):
            return self.portal(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        endpoint, values = self._match(path, method)
        if endpoint == "open":
            self.record_open(**values)
            start_response("200 OK", self.pixel_headers)
            # A HEAD is answered with the GET's headers and no body (RFC 9110 9.3.2).
            return [] if method == "HEAD" else [PIXEL]
        url = self.record_click(**values) if endpoint == "click" else None
        if url is None:
            return self.portal(environ, start_response)
        start_response("302 Found", [("Location", _location(url)), ("Content-Length", "0"), *self.headers])
        return [b""]

    def _match(self, path: str, method: str) -> tuple[str | None, dict[str, str]]:
        """(endpoint, its values), or (None, {}) for the portal."""
        if method in ("GET", "HEAD"):  # what methods=["GET"] allows
            if found := OPEN_PATH.fullmatch(path):
                return "open", {"token": found[1]}
            if found := CLICK_PATH.fullmatch(path):
                return "click", {"click_token": found[1], "link_token": found[2]}
        try:
            return self.routes.match(path, method=method)
        except HTTPException:
            return None, {}

    def record_open(self, token: str) -> None:
        """The answer is always the GIF, whatever the token; the open is recorded when the
        token is ours."""
        recipient = tracking_tokens(self.app).read_open(token)
        if recipient is not None:
            self._record(EventKind.EMAIL_OPEN, recipient)

    def record_click(self, click_token: str, link_token: str) -> str | None:
        """The signed destination (answered with a 302), the click recorded; None (the
        portal's 404) for anything not signed by us, never a redirect."""
        found = tracking_tokens(self.app).read_click(click_token, link_token)
        if found is None:
            return None
        recipient, url = found
        self._record(EventKind.EMAIL_CLICK, recipient, url)
        return url

    def _record(self, kind: EventKind, recipient: Recipient, url: str = "") -> None:
        """What tracking.record_open / record_click do, with the app's Redis client given to
        the intake, so that an app context is set up only when Redis cannot take the event."""
        if intake.append(kind, recipient, url, redis=self.app.extensions["redis"]):
            return
        with self.app.app_context():
            try:
                tracking.record_now(recipient, kind, url)
            except SQLAlchemyError:
                db.session.rollback()
                log.exception("could not record an email %s", "open" if kind == EventKind.EMAIL_OPEN else "click")
