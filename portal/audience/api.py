"""The events API: integrations (web site, webinar tool, shop) report what contacts did.

POST /api/v1/events   Authorization: Bearer <token>
{"email": "...", "mobile": "...", "kind": "download", "occurred_at": "2026-11-24T10:00:00+08:00",
 "properties": {"asset": "whitepaper-2026"}}
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, g, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from portal import audit
from portal.access import public
from portal.audience import normalise
from portal.audience.models import ApiToken
from portal.audience.service import API_EVENT_KINDS, AudienceError, find_contact, is_suppressed, record_event
from portal.extensions import csrf, db, limiter
from portal.models_base import utcnow

bp = Blueprint("api", __name__)
csrf.exempt(bp)  # token-authenticated, never cookie-authenticated
MAX_PROPERTIES_BYTES = 8192
MAX_DEPTH = 10
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(actor: Any, name: str) -> str:
    """A new token, returned once; only its hash is stored."""
    if not name.strip():
        raise AudienceError("token_name_empty")
    token = "mp_" + secrets.token_urlsafe(32)
    db.session.add(ApiToken(name=name.strip()[:100], token_hash=_hash(token), created_by_id=actor.id))
    audit.record(actor, "api_token.created", f"api_token:{name.strip()[:100]}")
    db.session.commit()
    return token


def revoke_token(actor: Any, token_id: int) -> None:
    row = db.session.get(ApiToken, token_id)
    if row is None or row.revoked_at:
        raise AudienceError("no_such_token")
    row.revoked_at = utcnow()
    audit.record(actor, "api_token.revoked", f"api_token:{row.name}")
    db.session.commit()


def list_tokens() -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc())))


def _token_key() -> str:
    header = request.headers.get("Authorization", "")
    return "token:" + _hash(header[7:]) if header.startswith("Bearer ") else "ip:" + (request.remote_addr or "")


def _refused_token(response) -> bool:
    """Only attempts with a missing or wrong token count against the caller's address."""
    return response.status_code == 401


def _error(status: int, message: str, field: str | None = None):
    body = {"error": message}
    if field:
        body["field"] = field
    return jsonify(body), status


@bp.errorhandler(413)
def _too_large(_error_value):
    return _error(413, f"the body must be under {current_app.config['API_MAX_BODY_BYTES']} bytes")


@bp.errorhandler(429)
def _too_many(_error_value):
    return _error(429, "too many requests; slow down")


def _depth(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit` (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _payload() -> dict[str, Any] | tuple:
    """The JSON object of the body, or the error to answer (400, or 413 past the size limit)."""
    limit = current_app.config["API_MAX_BODY_BYTES"]
    if (request.content_length or 0) > limit:
        return _error(413, f"the body must be under {limit} bytes")
    request.max_content_length = limit  # a body sent without its length is cut here too
    try:
        payload = json.loads(request.get_data(cache=False) or b"null")
    except RequestEntityTooLarge:
        return _error(413, f"the body must be under {limit} bytes")
    except (ValueError, RecursionError):
        return _error(400, "the body must be JSON")
    if not isinstance(payload, dict):
        return _error(400, "the body must be a JSON object")
    if _depth(payload, MAX_DEPTH):
        return _error(400, f"the body may nest at most {MAX_DEPTH} levels deep")
    for name in ("email", "mobile", "kind", "occurred_at"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return _error(400, f"{name} must be a string", name)
    return payload


@bp.post("/api/v1/events")
@public  # authenticated by its own bearer token, below
@limiter.limit("600 per minute", key_func=_token_key)
@limiter.limit("20 per minute", key_func=lambda: request.remote_addr or "", deduct_when=_refused_token)
def post_event():
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return _error(401, "missing bearer token")
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash(header[7:].strip())))
    if token is None or token.revoked_at is not None:
        return _error(401, "invalid or revoked token")
    g.api_token = token
    payload = _payload()
    if not isinstance(payload, dict):
        return payload
    kind = payload.get("kind")
    if kind not in API_EVENT_KINDS:
        return _error(422, f"kind must be one of: {', '.join(API_EVENT_KINDS)}", "kind")
    properties = payload.get("properties")
    properties = {} if properties is None else properties
    if not isinstance(properties, dict):
        return _error(422, "properties must be an object", "properties")
    if len(json.dumps(properties, ensure_ascii=False).encode()) > MAX_PROPERTIES_BYTES:
        return _error(413, f"properties must be under {MAX_PROPERTIES_BYTES} bytes", "properties")
    occurred_at = None
    if payload.get("occurred_at"):
        try:
            occurred_at = datetime.fromisoformat(payload["occurred_at"])
        except ValueError:
            return _error(422, "occurred_at must be ISO 8601, e.g. 2026-11-24T10:00:00+08:00", "occurred_at")
        if occurred_at.tzinfo is None:
            return _error(422, "occurred_at needs a time zone offset", "occurred_at")
        try:
            occurred_at = occurred_at.astimezone(UTC)
        except OverflowError:
            return _error(400, "occurred_at is out of range", "occurred_at")
        if not EARLIEST_EVENT <= occurred_at <= utcnow() + timedelta(days=1):
            return _error(400, "occurred_at must lie between the year 2000 and today", "occurred_at")
    try:
        email = normalise.email(payload.get("email"))
        mobile = normalise.mobile(payload.get("mobile"))
    except normalise.InvalidValue as exc:
        field = "email" if exc.code.startswith("email") else "mobile"
        return _error(422, f"invalid {field}: {exc.value}", field)
    if not email and not mobile:
        return _error(422, "give the contact's email or mobile", "email")
    if is_suppressed(email, mobile):
        return _error(409, "this person must not be tracked (erased or suppressed)")
    contact = find_contact(email, mobile)
    if contact is None:
        return _error(404, "no contact with this email or mobile; import or create the contact first")
    token.last_used_at = utcnow()
    event_id = record_event(contact.id, kind, occurred_at, properties, source=f"api:{token.name}")
    return jsonify({"id": event_id, "contact_id": contact.id}), 201
