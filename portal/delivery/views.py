"""Unsubscribing (RFC 8058) and, for people who read campaign reports, a campaign's
deliveries and each one's attempts. The open pixel and the click redirect are answered before
the portal's pages (portal/delivery/tracking_app.py).

Nobody signs in to unsubscribe: the signed token is the only credential. A GET only shows the
confirm page (mail scanners prefetch links), so unsubscribing takes a POST, which mail clients
send for one-click unsubscribe without cookies or a CSRF token.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, make_response, render_template, request

from portal.access import Permission, public, require
from portal.delivery import service, tracking
from portal.delivery.tokens import tracking_tokens
from portal.delivery.tracking_app import no_store
from portal.extensions import csrf

bp = Blueprint("delivery", __name__)


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
    return no_store(make_response(page))


@bp.post("/u/<token>")
@public
@csrf.exempt
def unsubscribe(token: str):
    """RFC 8058 one-click (`List-Unsubscribe=One-Click`) and the confirm page's button."""
    target = _target(token)
    method = "page" if request.form.get("via") == "page" else "one_click"
    tracking.unsubscribe(target, method=method)
    page = render_template("delivery/unsubscribe_done.html", target=target)
    return no_store(make_response(page))


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
