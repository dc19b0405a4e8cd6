"""The few helpers every view uses to answer htmx and plain requests alike."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import make_response, redirect, render_template, request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def page_or_fragment(page_template: str, fragment_template: str, **context):
    """The full page for a normal request; for htmx, the fragment the page itself includes."""
    return render_template(fragment_template if is_htmx() else page_template, **context)


def redirect_after_post(location: str):
    """303 for plain forms; HX-Location for htmx so the browser navigates instead of swapping."""
    if is_htmx():
        # XHR follows redirects silently, so htmx is told where to go with a header instead.
        response = make_response("", 200)
        response.headers["HX-Location"] = location
        return response
    return redirect(location, code=303)


def same_site_path(target: str | None, fallback: str) -> str:
    """`target` when it is a path on this site, else `fallback`: every `next`, `back` and the
    like goes through here, so that no form or link can send a person off-site. Browsers drop
    tabs and newlines from URLs ("/<tab>/evil.example" becomes "//evil.example") and read a
    backslash as a slash, so control characters and backslashes are refused too."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(char) < 32 or ord(char) == 127 for char in target)
    ):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target
