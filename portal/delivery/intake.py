"""The tracking intake: opens and clicks taken as they arrive, written to the database in batches.

The open pixel and the click redirect append their event to a Redis stream (one XADD, a tenth
of a millisecond) and answer; a PostgreSQL transaction per pixel would make the tracking tier
the bottleneck when Apple Mail fetches every pixel at the send rate. `flush` (the periodic job
every two seconds, and every rollup refresh before it counts) writes the stream a batch at a
time: the events into `contact_events` (an erased contact's are dropped), each delivery's first
open and click time, and the mark of the last entry written (`tracking_intake_mark`), all in
one transaction. The mark is moved by compare-and-set before anything is written, so:

- a flush that dies after its commit but before trimming the stream repeats nothing: entries at
  or before the mark are never written again (taken at least once, written exactly once);
- two flushers never write an entry twice: the second finds the mark moved and stops.

The database stays the truth; the stream holds only what is not written yet. Production runs
Redis with its append-only file (README), so an answered open survives a Redis restart, as a
committed one survives a PostgreSQL restart; when Redis cannot take an event, the request writes
it to the database itself (`tracking.record_open`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from redis import Redis
from redis.connection import Connection
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select, text, update
from sqlalchemy import insert as sql_insert

from portal.audience.models import Contact, ContactEvent, EventKind
from portal.delivery.models import Delivery, TrackingIntakeMark
from portal.delivery.tokens import Recipient
from portal.extensions import db

log = logging.getLogger(__name__)

STREAM = "portal:tracking:intake"
MARK_ID = 1
# Entries written per transaction: a few hundred milliseconds of PostgreSQL work at most.
BATCH = 5000
SOURCE = "tracking"
KINDS = {EventKind.EMAIL_OPEN.value, EventKind.EMAIL_CLICK.value}


def _redis() -> Redis:
    return current_app.extensions["redis"]


# Each web thread keeps one connection of the app's Redis pool for its appends and speaks to
# it directly: the client's per-command work (pool checkout, retry wrapper) cost as much CPU as
# the round trip itself, on the busiest path of the portal.
_thread = threading.local()


def _connection(redis: Redis) -> Connection:
    if getattr(_thread, "pool", None) is not redis.connection_pool:
        _thread.connection = redis.connection_pool.get_connection()
        _thread.pool = redis.connection_pool
    return _thread.connection


def append(kind: str, recipient: Recipient, url: str = "", redis: Redis | None = None) -> bool:
    """Take an open or a click; False when Redis cannot (the caller writes it directly). The
    event's time is the moment Redis took it (the entry's id). `redis` is the app's client, for
    a caller outside an app context (the tracking endpoints)."""
    fields = ["k", str(kind), "c", recipient.contact_id, "d", recipient.delivery_id or ""]
    if url:
        fields += ["u", url]
    try:
        connection = _connection(_redis() if redis is None else redis)
        connection.send_command("XADD", STREAM, "*", *fields)
        connection.read_response()
    except RedisError:
        if getattr(_thread, "connection", None) is not None:
            _thread.connection.disconnect()  # connects again on the next append
        log.warning("the tracking intake could not take an event: it is written directly", exc_info=True)
        return False
    return True


def _mark() -> str | None:
    """The id of the last entry written to the database."""
    return db.session.scalar(select(TrackingIntakeMark.last_entry).where(TrackingIntakeMark.id == MARK_ID))


# The writer runs every two seconds: an entry waiting this long means it is not running.
LATE_AFTER_SECONDS = 60


def backlog() -> tuple[int, float | None]:
    """(entries waiting to be written, seconds the oldest of them has waited, or None when none
    waits), for the health check. The count may include the few entries a flush that died
    before trimming has already written; the next flush trims them."""
    mark = _mark()
    db.session.rollback()
    redis = _redis()
    oldest = redis.xrange(STREAM, min=f"({mark or '0-0'}", count=1)
    if not oldest:
        return 0, None
    taken_ms = int(oldest[0][0].split(b"-", 1)[0])
    seconds, microseconds = redis.time()
    return redis.xlen(STREAM), max(0.0, seconds + microseconds / 1e6 - taken_ms / 1000)


def flush(max_entries: int | None = None, max_seconds: float | None = None) -> int:
    """Write the entries taken until now to the database, a batch per transaction, until none
    of them is left (or `max_entries` are written, or no batch may start after `max_seconds`,
    or another flush is at work); returns how many were written. Raises RedisError when Redis
    cannot be read: nothing is lost, the next flush writes them."""
    redis = _redis()
    # Only what the stream holds now: entries taken from here on wait for the next run. Under
    # steady traffic a flush that chased the newest entries wrote them a few dozen at a time,
    # each batch paying the same round trips as a full one, and kept a core busy beside the
    # tracking endpoints it was meant to relieve.
    newest = redis.xrevrange(STREAM, count=1)
    if not newest:
        return 0
    until = newest[0][0].decode()
    written = 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while max_entries is None or written < max_entries:
        if written and deadline is not None and time.monotonic() > deadline:
            break
        mark = _mark()
        if mark is None:  # the migration writes the row; a database emptied by hand has none
            db.session.add(TrackingIntakeMark(id=MARK_ID, last_entry="0-0"))
            db.session.commit()
            continue
        count = BATCH if max_entries is None else min(BATCH, max_entries - written)
        entries = redis.xrange(STREAM, min=f"({mark}", max=until, count=count)
        if not entries:
            db.session.rollback()
            break
        last = entries[-1][0].decode()
        moved = db.session.execute(
            update(TrackingIntakeMark)
            .where(TrackingIntakeMark.id == MARK_ID, TrackingIntakeMark.last_entry == mark)
            .values(last_entry=last)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not moved:  # another flush wrote these entries (it held the row until its commit)
            db.session.rollback()
            break
        _write(entries)
        db.session.commit()
        # Written: the stream may forget them (the mark, not the stream, says what is written).
        trim = redis.pipeline(transaction=False)
        trim.xtrim(STREAM, minid=last, approximate=False)
        trim.xdel(STREAM, last)
        trim.execute()
        written += len(entries)
    return written


def _write(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """The batch's events and first times (in the caller's transaction)."""
    taken = []
    for entry_id, fields in entries:
        kind = fields.get(b"k", b"").decode()
        if kind not in KINDS:
            log.error("tracking intake entry %s has no known kind: left out", entry_id)
            continue
        delivery = fields.get(b"d", b"")
        at = datetime.fromtimestamp(int(entry_id.split(b"-", 1)[0]) / 1000, UTC)
        taken.append((kind, int(fields[b"c"]), int(delivery) if delivery else None, fields.get(b"u", b"").decode(), at))
    if db.engine.dialect.name == "postgresql":
        _write_postgresql(taken)
    else:
        _write_rows(taken)


Taken = list[tuple[str, int, int | None, str, datetime]]  # kind, contact, delivery, url, at


def _write_rows(taken: Taken) -> None:
    """SQLite: a statement per row, in one transaction."""
    contact_ids = sorted({contact_id for _, contact_id, _, _, _ in taken})
    existing = set(db.session.scalars(select(Contact.id).where(Contact.id.in_(contact_ids)))) if contact_ids else set()
    # An erased contact's events are dropped: nothing is recorded about them.
    kept = [row for row in taken if row[1] in existing]
    if kept:
        db.session.execute(
            sql_insert(ContactEvent.__table__),
            [
                {"contact_id": c, "kind": k, "occurred_at": at, "properties": _properties(k, d, u), "source": SOURCE}
                for k, c, d, u, at in kept
            ],
        )
    opened, clicked = _first_times((k, c, d, at) for k, c, d, _, at in kept)
    deliveries = Delivery.__table__
    for column, first_times in ((deliveries.c.opened_at, opened), (deliveries.c.clicked_at, clicked)):
        if first_times:
            db.session.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == bindparam("delivery"),
                    deliveries.c.contact_id == bindparam("contact"),
                    column.is_(None),
                )
                .values({column.name: bindparam("at")}),
                [{"delivery": d, "contact": c, "at": at} for (d, c), at in first_times.items()],
            )


def _properties(kind: str, delivery_id: int | None, url: str) -> dict[str, Any]:
    if kind == EventKind.EMAIL_CLICK:
        return {"delivery_id": delivery_id, "url": url}
    return {"delivery_id": delivery_id}


def _first_times(events: Iterable[tuple[str, int, int | None, Any]]) -> tuple[dict, dict]:
    """Each delivery's first open and first click among these events (in order, so the first
    seen is the earliest); a click is an open as well."""
    opened: dict[tuple[int, int], Any] = {}
    clicked: dict[tuple[int, int], Any] = {}
    for kind, contact_id, delivery_id, at in events:
        if delivery_id is not None:
            opened.setdefault((delivery_id, contact_id), at)
            if kind == EventKind.EMAIL_CLICK:
                clicked.setdefault((delivery_id, contact_id), at)
    return opened, clicked


# PostgreSQL takes a batch as arrays: one statement for the events (an erased contact's dropped
# by the join), one for the first times (an erased contact's deliveries are gone with them),
# instead of a statement per row. Numbers travel as one array literal each (psycopg would check
# every element of a list), times as milliseconds since the epoch. The first open and the first
# click of a delivery are set by one UPDATE: a delivery first clicked in the batch gets one new
# row version, and the rollups' trigger fires once for it, not once per column.
_INSERT_EVENTS = text("""
INSERT INTO contact_events (contact_id, kind, occurred_at, properties, source)
SELECT batch.contact_id,
       CASE WHEN batch.url IS NULL THEN :open ELSE :click END,
       timestamptz 'epoch' + batch.ms * interval '1 millisecond',
       CASE WHEN batch.url IS NULL THEN json_build_object('delivery_id', batch.delivery_id)
            ELSE json_build_object('delivery_id', batch.delivery_id, 'url', batch.url) END,
       :source
  FROM unnest(CAST(:contact_ids AS bigint[]), CAST(:delivery_ids AS bigint[]), CAST(:ms AS bigint[]),
              CAST(:urls AS text[])) WITH ORDINALITY AS batch(contact_id, delivery_id, ms, url, n)
  JOIN contacts ON contacts.id = batch.contact_id
 ORDER BY batch.n
""")
_FIRST_TIMES = text("""
UPDATE deliveries
   SET opened_at = coalesce(deliveries.opened_at, timestamptz 'epoch' + batch.opened_ms * interval '1 millisecond'),
       clicked_at = coalesce(deliveries.clicked_at, timestamptz 'epoch' + batch.clicked_ms * interval '1 millisecond')
  FROM unnest(CAST(:delivery_ids AS bigint[]), CAST(:contact_ids AS bigint[]), CAST(:opened_ms AS bigint[]),
              CAST(:clicked_ms AS bigint[])) AS batch(delivery_id, contact_id, opened_ms, clicked_ms)
 WHERE deliveries.id = batch.delivery_id AND deliveries.contact_id = batch.contact_id
   AND (deliveries.opened_at IS NULL OR (deliveries.clicked_at IS NULL AND batch.clicked_ms IS NOT NULL))
""")


def _numbers(values: Iterable[int | None]) -> str:
    """A PostgreSQL array literal of integers: '{1,2,NULL}'."""
    return "{" + ",".join("NULL" if value is None else str(int(value)) for value in values) + "}"


def _write_postgresql(taken: Taken) -> None:
    ms = [int(at.timestamp() * 1000) for _, _, _, _, at in taken]
    db.session.execute(
        _INSERT_EVENTS,
        {
            "open": EventKind.EMAIL_OPEN.value,
            "click": EventKind.EMAIL_CLICK.value,
            "source": SOURCE,
            "contact_ids": _numbers([contact_id for _, contact_id, _, _, _ in taken]),
            "delivery_ids": _numbers([delivery_id for _, _, delivery_id, _, _ in taken]),
            "ms": _numbers(ms),
            "urls": [url if kind == EventKind.EMAIL_CLICK else None for kind, _, _, url, _ in taken],
        },
    )
    # Every delivery clicked is opened as well: the opened keys hold the clicked ones.
    opened, clicked = _first_times((k, c, d, at) for (k, c, d, _, _), at in zip(taken, ms, strict=True))
    if opened:
        db.session.execute(
            _FIRST_TIMES,
            {
                "delivery_ids": _numbers([d for d, _ in opened]),
                "contact_ids": _numbers([c for _, c in opened]),
                "opened_ms": _numbers(opened.values()),
                "clicked_ms": _numbers([clicked.get(key) for key in opened]),
            },
        )
