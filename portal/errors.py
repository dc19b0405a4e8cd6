"""Error pages that work both as full pages and as htmx fragments."""

from __future__ import annotations

from flask import Flask
from werkzeug.exceptions import HTTPException, InternalServerError

from portal.extensions import db
from portal.htmx import page_or_fragment

SHOWN_CODES = frozenset({400, 401, 403, 404, 405, 413, 422, 429})


def _render(error: HTTPException):
    return page_or_fragment("errors/error.html", "errors/_error.html", error=error), error.code


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code not in SHOWN_CODES:
            return error
        return _render(error)

    @app.errorhandler(InternalServerError)
    def server_error(error: InternalServerError):
        db.session.rollback()
        return _render(error)
