"""The browser-side defences every response carries, and the preview frame they make necessary.

Content-Security-Policy: scripts, styles, images, fonts and frames from the portal only; no
inline script, style attribute or eval (so the templates keep their scripts in static files and
their looks in app.css); no plugins, no <base> tricks, and no framing of the portal by others.
An iframe with `srcdoc` inherits its parent's policy, so the email preview, whose HTML is full of
inline styles and remote images by nature, is served by a route of its own, sandboxed, under a
policy that allows those and nothing that runs."""

from __future__ import annotations

import secrets

from flask import Blueprint, Flask, Response, abort, current_app, g, request, session, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from portal.access import signed_in

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# The email preview: the message's own inline styles and images, nothing that runs, no forms,
# shown only inside the portal's own pages.
PREVIEW_POLICY = "; ".join(
    [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "img-src http: https: data:",
        "font-src http: https: data:",
        "frame-ancestors 'self'",
        "sandbox",
    ]
)
HSTS = "max-age=31536000; includeSubDomains"
# A preview is kept this long for the frame to load it (seconds).
PREVIEW_TTL = 600
PREVIEW_KEY = "preview-frame:{user_id}:{token}"

bp = Blueprint("security", __name__)


def register(app: Flask) -> None:
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops:
        # Behind that many proxies, the client's address, scheme and host are the ones they
        # forwarded: rate limits and the audit trail see the person, not the proxy.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    app.after_request(add_security_headers)
    app.add_template_global(preview_frame_url)
    app.add_template_global(csrf_token)  # in place of Flask-WTF's own, which signs on every page
    app.register_blueprint(bp)


# What every response carries unless its view set its own (the preview's policy).
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
)


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    # One pass over the headers there are: each lookup of a missing name in werkzeug's Headers
    # raises and catches an exception, which made these few lines a twentieth of a kept page.
    present = {name.lower() for name, _value in headers}
    if "vary" in present:
        response.vary.add("HX-Request")
    signed_in_page = getattr(current_user, "is_authenticated", False) and request.endpoint != "static"
    personal = signed_in_page or "content-disposition" in present
    if personal and "cache-control" in present:
        del headers["Cache-Control"]
    headers.extend(security_headers(present, current_app.config["PORTAL_ENV"] == "production", personal))
    return response


def security_headers(present: set[str], production: bool, personal: bool) -> list[tuple[str, str]]:
    """What a response with the headers `present` (lower-case names) gets added: the defences
    it did not set itself, Vary on HX-Request unless it varies already (pages and their htmx
    fragments share URLs: caches must keep them apart), and for a `personal` one (a signed-in
    page, a download: personal data) no copy in any cache."""
    wanted = SECURITY_HEADERS + ((("Strict-Transport-Security", HSTS),) if production else ())
    added = [(name, value) for name, value in wanted if name.lower() not in present]
    if "vary" not in present:
        added.append(("Vary", "HX-Request"))
    if personal:
        added.append(("Cache-Control", "no-store"))
    return added


# Signed CSRF tokens by the session's raw token. Signing costs a tenth of a kept page (the
# reports dashboard); tokens carry no time limit (WTF_CSRF_TIME_LIMIT is None: a token is good
# for as long as its session), so one signed a minute ago is as good as a new one. A new raw
# token (at sign-in) is signed anew; the dict only ever holds what sessions hold already.
_SIGNED_CSRF_ENTRIES = 4096
_signed_csrf: dict[str, str] = {}


def csrf_token() -> str:
    """The reader's signed CSRF token, as Flask-WTF's `generate_csrf` gives it, signed once per
    session rather than once per page."""
    signed = signed_csrf_token(session.get("csrf_token"))
    if signed is None:
        signed = generate_csrf()
        if current_app.config["WTF_CSRF_TIME_LIMIT"] is None:
            if len(_signed_csrf) >= _SIGNED_CSRF_ENTRIES:
                _signed_csrf.clear()
            _signed_csrf[session["csrf_token"]] = signed
    g.csrf_token = signed  # where Flask-WTF keeps it for the rest of the request
    return signed


def signed_csrf_token(raw: str | None) -> str | None:
    """The signed form of the session's raw CSRF token `raw`, if this process has signed it."""
    if not raw or current_app.config["WTF_CSRF_TIME_LIMIT"] is not None:
        return None
    return _signed_csrf.get(raw)


def preview_frame_url(html: str) -> str:
    """Keep `html` for a moment and return the URL the preview iframe loads it from; only the
    person who asked can load it."""
    token = secrets.token_urlsafe(24)
    key = PREVIEW_KEY.format(user_id=current_user.id, token=token)
    current_app.extensions["redis"].set(key, html.encode(), ex=PREVIEW_TTL)
    return url_for("security.preview_frame", token=token)


@bp.get("/preview-frame/<token>")
@signed_in  # the page that rendered the preview checked its own permission; the key is this user's
def preview_frame(token: str):
    html = current_app.extensions["redis"].get(PREVIEW_KEY.format(user_id=current_user.id, token=token))
    if html is None:
        abort(404)
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_POLICY
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response
