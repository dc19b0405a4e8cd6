"""What the tracking endpoints record: opens, clicks and unsubscribes.

Each open or click is an event in `contact_events` (a contact erased since the send simply
records nothing) plus, the first time only, the open/click time on the delivery's ledger row,
committed at once. On PostgreSQL that is ONE statement, sent in one round trip on a connection
in autocommit mode (`_TRACKED`: the insert and the ledger update as data-modifying CTEs, with
`synchronous_commit` off for that statement's own transaction), from a pool of its own that
does not ping a connection before each use (a connection the server dropped is replaced and
the statement sent again, once). The web worker's own work per request is then small (its
threads hold the GIL about a third of the time under load): what is left is PostgreSQL's
answer time (`tests/benchmarks/test_tracking_bench.py` compares the endpoints with a Flask
hello world). No buffer: an event is in the database before the answer leaves, so a crashing
web worker cannot lose one, and there is no second place where events live. If event volume
ever outgrows that, the table can be partitioned by month (see DESIGN.md) before buffering.

Unsubscribing is idempotent: the first request sets `unsubscribed`, records an
`unsubscribe` event and an audit entry; later ones change nothing.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import JSON, Boolean, String, bindparam, create_engine, event, literal, select, text, update
from sqlalchemy import insert as sql_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from portal import audit
from portal.audience.models import BigId, Contact, ContactEvent, EventKind
from portal.delivery.models import Delivery, DeliveryStatus, ExclusionReason
from portal.delivery.tokens import Recipient, UnsubscribeTarget
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

SOURCE = "tracking"


def _record_event(contact_id: int, kind: str, properties: dict[str, Any], at: datetime | None = None) -> None:
    columns = ContactEvent.__table__.c
    row = select(
        literal(contact_id, BigId),
        literal(kind, String(32)),
        literal(at or utcnow(), UTCDateTime()),
        literal(properties, JSON()),
        literal(SOURCE, String(64)),
    ).where(Contact.id == contact_id)
    db.session.execute(
        sql_insert(ContactEvent.__table__).from_select(
            [
                columns.contact_id,
                columns.kind,
                columns.occurred_at,
                columns.properties,
                columns.source,
            ],
            row,
        )
    )


# Which columns of the delivery each kind of event sets the first time it happens.
_FIRST_TIMES = {
    EventKind.EMAIL_OPEN: ("opened_at",),
    EventKind.EMAIL_CLICK: ("opened_at", "clicked_at"),  # a click is an open as well
    EventKind.UNSUBSCRIBE: ("unsubscribed_at",),
}


def note_on_delivery(delivery_id: int | None, contact_id: int, kind: str, at: datetime) -> None:
    """Set the delivery's first open / click / unsubscribe time if it has none yet, so that
    reports read one row per message instead of aggregating its events."""
    if delivery_id is None:
        return
    for column in _FIRST_TIMES[EventKind(kind)]:
        db.session.execute(
            update(Delivery)
            .where(
                Delivery.id == delivery_id,
                Delivery.contact_id == contact_id,
                getattr(Delivery, column).is_(None),
            )
            .values({column: at})
            .execution_options(synchronize_session=False)
        )


# An open or a click in one statement. Opens and clicks do not wait for PostgreSQL's WAL flush
# (`synchronous_commit` off for this statement's own transaction: ~0.15 ms instead of 1-7 ms
# here): a crashing web worker loses nothing, the commit has happened; only a crash of the
# database server itself could lose the last fraction of a second of opens and clicks, never
# leaving the database inconsistent. Unsubscribes keep the full guarantee. The ledger row is
# updated only while a first time is missing, so a repeated open writes the event alone.
_TRACKED = text("""
WITH quick AS (SELECT set_config('synchronous_commit', 'off', true) AS setting),
recorded AS (
  INSERT INTO contact_events (contact_id, kind, occurred_at, properties, source)
  SELECT c.id, :kind, :at, :properties, :source FROM contacts AS c, quick WHERE c.id = :contact_id
  RETURNING contact_id
)
UPDATE deliveries
   SET opened_at = coalesce(opened_at, :at),
       clicked_at = CASE WHEN :click THEN coalesce(clicked_at, :at) ELSE clicked_at END
 WHERE id = :delivery_id AND contact_id = :contact_id AND (opened_at IS NULL OR (:click AND clicked_at IS NULL))
""").bindparams(
    bindparam("at", type_=UTCDateTime()),
    bindparam("properties", type_=JSON()),
    bindparam("click", type_=Boolean()),
    bindparam("delivery_id", type_=BigId),
    bindparam("contact_id", type_=BigId),
)


_ENGINE_KEY = "delivery.tracking_engine"
_engine_lock = threading.Lock()


def _tracking_engine() -> Engine:
    """The process's pool for tracking statements: autocommit, and no ping before each use
    (the app's pool pings, a second round trip that would double a tracking request's)."""
    engine = current_app.extensions.get(_ENGINE_KEY)
    if engine is None:
        with _engine_lock:
            engine = current_app.extensions.get(_ENGINE_KEY)
            if engine is None:
                options = {**current_app.config["SQLALCHEMY_ENGINE_OPTIONS"], "pool_pre_ping": False}
                engine = create_engine(db.engine.url, isolation_level="AUTOCOMMIT", **options)
                # Closed with the app's own pool (at shutdown, in tests).
                event.listen(db.engine, "engine_disposed", lambda _engine, own=engine: own.dispose())
                current_app.extensions[_ENGINE_KEY] = engine
    return engine


def _record_tracked(recipient: Recipient, kind: str, properties: dict[str, Any]) -> None:
    now = utcnow()
    if db.engine.dialect.name == "postgresql":
        values = {
            "kind": kind,
            "at": now,
            "properties": properties,
            "source": SOURCE,
            "click": kind == EventKind.EMAIL_CLICK,
            "delivery_id": recipient.delivery_id,
            "contact_id": recipient.contact_id,
        }
        for attempt in (1, 2):
            try:
                with _tracking_engine().connect() as connection:
                    connection.execute(_TRACKED, values)
                return
            except DBAPIError as exc:
                # A pooled connection the server has dropped (a restart): the pool is renewed,
                # the statement sent once more. Nothing was written by the failed attempt.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
    _record_event(recipient.contact_id, kind, properties, now)
    note_on_delivery(recipient.delivery_id, recipient.contact_id, kind, now)
    db.session.commit()


def record_open(recipient: Recipient) -> None:
    """Record that `recipient` opened the email (the pixel was fetched)."""
    _record_tracked(recipient, EventKind.EMAIL_OPEN, {"delivery_id": recipient.delivery_id})


def record_click(recipient: Recipient, url: str) -> None:
    """Record that `recipient` followed the link to `url`."""
    _record_tracked(recipient, EventKind.EMAIL_CLICK, {"delivery_id": recipient.delivery_id, "url": url})


class UnsubscribeView(NamedTuple):
    """What the confirm page shows."""

    masked_email: str
    already_unsubscribed: bool


def mask_email(email: str) -> str:
    """`j***@example.com`: enough for the person to recognise, little for anyone else."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else ""


def describe_unsubscribe(target: UnsubscribeTarget) -> UnsubscribeView:
    """The confirm page's facts; a test send's link shows no real contact."""
    if target.is_test or target.contact_id is None:
        return UnsubscribeView("", False)
    row = db.session.execute(select(Contact.email, Contact.unsubscribed).where(Contact.id == target.contact_id)).first()
    if row is None:
        return UnsubscribeView("", True)
    return UnsubscribeView(mask_email(row.email or ""), bool(row.unsubscribed))


def unsubscribe(target: UnsubscribeTarget, *, method: str) -> bool:
    """Unsubscribe the target's contact from marketing; True if this call did it, False if
    it was already done (or the token is a test send's, which changes nothing).

    `method` says how: "one_click" (RFC 8058 POST from the mail client) or "page"."""
    if target.is_test or target.contact_id is None:
        return False
    now = utcnow()
    reason = "one-click unsubscribe" if method == "one_click" else "unsubscribe link"
    changed = db.session.execute(
        update(Contact)
        .where(Contact.id == target.contact_id, Contact.unsubscribed.is_(False))
        .values(unsubscribed=True, unsubscribed_at=now, unsubscribe_reason=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed:
        # Nothing more goes out to them, whichever campaign planned it.
        db.session.execute(
            update(Delivery)
            .where(Delivery.contact_id == target.contact_id, Delivery.status == DeliveryStatus.PENDING)
            .values(status=DeliveryStatus.SKIPPED, reason=ExclusionReason.UNSUBSCRIBED)
            .execution_options(synchronize_session=False)
        )
        _record_event(
            target.contact_id,
            EventKind.UNSUBSCRIBE,
            {"delivery_id": target.delivery_id, "method": method},
            now,
        )
        note_on_delivery(target.delivery_id, target.contact_id, EventKind.UNSUBSCRIBE, now)
        audit.record(
            None,
            "contact.unsubscribe",
            f"contact:{target.contact_id}",
            {"delivery_id": target.delivery_id, "method": method},
        )
    db.session.commit()
    return bool(changed)
