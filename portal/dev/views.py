"""The development Outbox: what the local SMTP sink received."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template

from portal.access import Permission, require
from portal.dev import outbox

bp = Blueprint("outbox", __name__)


@bp.get("/")
@require(Permission.OUTBOX_VIEW)
def index():
    messages = outbox.list_messages(current_app.config["OUTBOX_DIR"])
    return render_template("dev/outbox.html", messages=messages)


@bp.get("/<key>")
@require(Permission.OUTBOX_VIEW)
def show(key: str):
    message = outbox.get_message(current_app.config["OUTBOX_DIR"], key)
    if message is None:
        abort(404)
    return render_template("dev/outbox_message.html", message=message)
