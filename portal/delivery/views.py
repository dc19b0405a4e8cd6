"""Public tracking endpoints: open pixel, click redirect, unsubscribe (RFC 8058); and, for
people who read campaign reports, a campaign's deliveries and each one's attempts.

Nobody signs in here: the signed token is the only credential. A GET never changes state
beyond recording an open or click (mail scanners prefetch links), so unsubscribing takes a
POST, which mail clients send for one-click unsubscribe without cookies or a CSRF token.
"""

from __future__ import annotations

import base64
import logging

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request
from sqlalchemy.exc import SQLAlchemyError

from portal.access import Permission, public, require
from portal.delivery import service, tracking
from portal.delivery.tokens import tracking_tokens
from portal.extensions import csrf, db

bp = Blueprint("delivery", __name__)
log = logging.getLogger(__name__)

# A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0, private"


def _no_store(response):
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    return response


@bp.get("/t/o/<token>.gif")
@public
def open_pixel(token: str):
    """Always the GIF, whatever the token; the open is recorded when the token is ours."""
    recipient = tracking_tokens(current_app).read_open(token)
    if recipient is not None:
        try:
            tracking.record_open(recipient)
        except SQLAlchemyError:
            db.session.rollback()
            log.exception("could not record an email open")
    response = make_response(PIXEL)
    response.mimetype = "image/gif"
    return _no_store(response)


@bp.get("/t/c/<click_token>/<link_token>")
@public
def click(click_token: str, link_token: str):
    """302 to the signed destination; anything not signed by us is a 404, never a redirect."""
    found = tracking_tokens(current_app).read_click(click_token, link_token)
    if found is None:
        abort(404)
    recipient, url = found
    try:
        tracking.record_click(recipient, url)
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("could not record an email click")
    return _no_store(redirect(url, code=302))


def _target(token: str):
    target = tracking_tokens(current_app).read_unsubscribe(token)
    if target is None:
        abort(404)
    return target


@bp.get("/u/<token>")
@public
def unsubscribe_confirm(token: str):
    """The confirm page: a GET only shows it (mail scanners prefetch links)."""
    target = _target(token)
    view = tracking.describe_unsubscribe(target)
    page = render_template("delivery/unsubscribe_confirm.html", target=target, view=view)
    return _no_store(make_response(page))


@bp.post("/u/<token>")
@public
@csrf.exempt
def unsubscribe(token: str):
    """RFC 8058 one-click (`List-Unsubscribe=One-Click`) and the confirm page's button."""
    target = _target(token)
    method = "page" if request.form.get("via") == "page" else "one_click"
    tracking.unsubscribe(target, method=method)
    page = render_template("delivery/unsubscribe_done.html", target=target)
    return _no_store(make_response(page))


# -- what happened to each message (permission as for campaign reports) -------------------------
@bp.get("/campaigns/<int:campaign_id>/deliveries")
@require(Permission.REPORTS_VIEW)
def deliveries(campaign_id: int):
    status = request.args.get("status", "")
    try:
        campaign, rows = service.campaign_deliveries(campaign_id, status)
    except service.DeliveryError:
        abort(404)
    return render_template("delivery/deliveries.html", campaign=campaign, rows=rows, status=status)


@bp.get("/campaigns/<int:campaign_id>/deliveries/<int:delivery_id>")
@require(Permission.REPORTS_VIEW)
def delivery(campaign_id: int, delivery_id: int):
    try:
        detail = service.delivery_detail(campaign_id, delivery_id)
    except service.DeliveryError:
        abort(404)
    return render_template("delivery/detail.html", detail=detail)
