"""Error pages that work both as full pages and as htmx fragments."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import Forbidden, HTTPException, InternalServerError

from portal.extensions import db
from portal.htmx import page_or_fragment

SHOWN_CODES = frozenset({400, 401, 403, 404, 405, 413, 422, 429})


def render_error(error: HTTPException):
    """The error page, or its fragment for an htmx request, with the error's status code."""
    return page_or_fragment("errors/error.html", "errors/_error.html", error=error), error.code


def render_refusal():
    """The 403 answer, for a blueprint's handler of its service's refusals: the same page or
    fragment as a route's own permission check gives."""
    return render_error(Forbidden())


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code not in SHOWN_CODES:
            return error
        return render_error(error)

    @app.errorhandler(InternalServerError)
    def server_error(error: InternalServerError):
        db.session.rollback()
        return render_error(error)
