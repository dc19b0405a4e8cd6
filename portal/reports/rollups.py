"""Rollups: the dashboard's counters kept up to date from the ledger, so that no page rescans it.

Counters live per campaign step, local day and key of each contact dimension
(`report_rollups`), beside a time series per step and hour (`report_series_counts`). Database
triggers (migration 0016) note every contact whose messages, grouping fields or tags change in
`report_dirty_contacts`; nothing that writes the ledger has to know about reports. A refresh
(the periodic job, or a reader finding the rollups older than REPORT_ROLLUP_MAX_AGE_SECONDS)
takes those contacts off the queue, recounts their messages and adds the difference between
what they add now and what they added when last counted (kept per contact in
`report_counted_contacts`). Taking with DELETE ... RETURNING means a change committed while a
refresh runs is simply left for the next one: unlike a sequence high-water mark, no change
whose transaction commits late can be skipped.

The conversions of the dashboard's default kind and window (CONVERSION_KIND within
CONVERSION_DAYS) are counted the same way, from the contact's events of that kind (a trigger
notes the contact when one is written, changed or deleted); other kinds and windows are read
from the ledger (metrics._rolled_up).

A contact's messages are few (one per step), so a refresh costs in proportion to what changed,
never to the size of the ledger. Unique counts stay exact: every message adds at most 1 to
each of its counters; a campaign's reach is counted on the first delivered message of each
contact, and a channel's reach on the first delivered message of each contact on that channel
(within the campaign, and across all campaigns).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import BigInteger, any_, delete, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from portal.audience.models import Contact, ContactEvent, ContactTag
from portal.delivery import intake
from portal.delivery.models import SETTLED_STATUSES, Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.reports.models import (
    ReportCountedContact,
    ReportDirtyContact,
    ReportRollup,
    ReportRollupState,
    ReportSeriesCount,
)

log = logging.getLogger(__name__)

# The days of the rollups are calendar days here (date filters in another zone are computed
# from the ledger instead).
REPORT_TIMEZONE = "Asia/Shanghai"
# The contact fields the figures can be grouped by: dimension -> column. Adding a dimension
# (another contact field) is one line here, plus its labels in formatting.py; contacts counted before
# the change are counted under it after `flask rebuild-report-rollups`.
CONTACT_FIELDS = {
    "province": Contact.province,
    "region": Contact.region,
    "industry": Contact.industry,
    "lifecycle": Contact.lifecycle_stage,
}
COUNTERS = (
    "messages",
    "audience",
    "attempted",
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "opens",
    "clicks",
    "unsubscribes",
    "reached",
    "channel_reached",
    "all_channel_reached",
    "converted",
    "revenue",
    "step_converted",
    "step_revenue",
    "channel_converted",
    "channel_revenue",
    "all_channel_converted",
    "all_channel_revenue",
)
# The conversions the rollups count: the dashboard's default (metrics.Filters), what every
# manager sees first. Conversions of another kind or window are computed from the ledger. The
# trigger that notes contacts whose events of this kind change (migration 0025) names it too.
CONVERSION_KIND = "purchase"
CONVERSION_DAYS = 30
SERIES = ("sent", "opens", "clicks")
BATCH_CONTACTS = 2000
STATE_ID = 1
# Any fixed number: PostgreSQL's advisory lock that lets one refresh run at a time.
ADVISORY_LOCK = 721_021

_SETTLED = {s.value for s in SETTLED_STATUSES}


_ZONE = ZoneInfo(REPORT_TIMEZONE)


def _local_day(moment: datetime) -> str:
    return moment.astimezone(_ZONE).date().isoformat()


def _hour(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0).isoformat()


def conversion_events(kind: str):
    """Events of `kind` as conversions count them: id, contact, when, and the "amount" they
    bring (0 without one)."""
    e = ContactEvent.__table__
    amount = func.coalesce(e.c.properties["amount"].as_float(), 0.0)
    return select(e.c.id, e.c.contact_id, e.c.occurred_at, amount.label("amount")).where(e.c.kind == kind)


_WINDOW = timedelta(days=CONVERSION_DAYS)
_CONVERSIONS_AT = COUNTERS.index("converted")


def _converted(events: list[Any], spans: Iterable[tuple[datetime, datetime]]) -> tuple[int, float]:
    """(1 if any event falls in one of the spans [start, end), the amount of those events)."""
    spans = list(spans)
    found = [e.amount for e in events if any(start <= e.occurred_at < end for start, end in spans)]
    return (1 if found else 0), sum(found)


def _conversions(delivered: list[Any], events: list[Any]) -> dict[int, list[float]]:
    """Message id -> what it adds to the conversion counters (COUNTERS from "converted" on),
    as metrics.grouped_statement defines them: a contact converted in a campaign when an event
    came no earlier than the first message delivered there and less than the window after the
    last; in a step, within the window after that step's message; in a channel, within the
    window after any of its messages (each event once)."""
    added: dict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0, 0, 0.0, 0, 0.0])
    if not events:
        return added
    sent = [m for m in delivered if m.sent_at is not None]
    by_campaign: dict[Any, list[Any]] = defaultdict(list)
    by_campaign_channel: dict[Any, list[Any]] = defaultdict(list)
    by_channel: dict[Any, list[Any]] = defaultdict(list)
    for m in sent:
        by_campaign[m.campaign_id].append(m)
        by_campaign_channel[(m.campaign_id, m.channel)].append(m)
        by_channel[m.channel].append(m)
    for m in sent:
        added[m.id][2:4] = _converted(events, [(m.sent_at, m.sent_at + _WINDOW)])
    for messages in by_campaign.values():
        first, last = min(m.sent_at for m in messages), max(m.sent_at for m in messages)
        added[messages[0].id][0:2] = _converted(events, [(first, last + _WINDOW)])
    for offset, groups in ((4, by_campaign_channel), (6, by_channel)):
        for messages in groups.values():
            spans = [(m.sent_at, m.sent_at + _WINDOW) for m in messages]
            added[messages[0].id][offset : offset + 2] = _converted(events, spans)
    return added


def _contact_state(dimensions: list[list[str]], messages: list[Any], events: list[Any]) -> dict[str, Any]:
    """What one contact's messages add: their counters per (campaign, step, channel, day), their
    series entries, and the dimension keys they are counted under. `events`: the contact's
    events of CONVERSION_KIND."""
    cells: dict[tuple, list[int]] = {}
    series: dict[tuple, int] = defaultdict(int)
    delivered = sorted(
        (m for m in messages if m.status == DeliveryStatus.SENT),
        key=lambda m: (m.sent_at is None, m.sent_at or m.due_at, m.id),
    )
    # The first delivered message of the contact in each campaign, campaign and channel, channel.
    first_of_campaign: dict[Any, int] = {}
    first_of_campaign_channel: dict[Any, int] = {}
    first_of_channel: dict[Any, int] = {}
    for m in delivered:
        first_of_campaign.setdefault(m.campaign_id, m.id)
        first_of_campaign_channel.setdefault((m.campaign_id, m.channel), m.id)
        first_of_channel.setdefault(m.channel, m.id)
    reach_ids = set(first_of_campaign.values())
    channel_reach_ids = set(first_of_campaign_channel.values())
    all_channel_reach_ids = set(first_of_channel.values())
    conversions = _conversions(delivered, events)
    for m in messages:
        status = m.status
        is_delivered = status == DeliveryStatus.SENT
        day = _local_day(m.sent_at or m.due_at)
        key = (m.campaign_id, m.step_id, m.channel, day)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = [0] * len(COUNTERS)
        for i, flag in enumerate(
            (
                True,
                status != DeliveryStatus.EXCLUDED,
                status in _SETTLED,
                is_delivered,
                status == DeliveryStatus.BOUNCED,
                status == DeliveryStatus.FAILED and m.reason == "soft_bounce",
                is_delivered and m.opened_at is not None,
                is_delivered and m.clicked_at is not None,
                m.unsubscribed_at is not None,
                m.id in reach_ids,
                m.id in channel_reach_ids,
                m.id in all_channel_reach_ids,
            )
        ):
            if flag:
                cell[i] += 1
        added = conversions.get(m.id)
        if added is not None:
            for i, value in enumerate(added, start=_CONVERSIONS_AT):
                cell[i] += value
        if is_delivered and m.sent_at is not None:
            for name, moment in (("sent", m.sent_at), ("opens", m.opened_at), ("clicks", m.clicked_at)):
                if moment is not None:
                    series[(*key, name, _hour(moment))] += 1
    return {
        "keys": dimensions,
        "cells": [[*key, counters] for key, counters in cells.items()],
        "series": [[*key, n] for key, n in series.items()],
    }


def _add(state: dict[str, Any] | None, sign: int, by_keys: dict, series: dict) -> None:
    """Add `sign` times what `state` contributes to the pending changes, gathered by the
    contact's dimension keys (most contacts share theirs with many others: the keys are
    spread over the cells once per batch, not once per contact)."""
    if not state:
        return
    cells = by_keys[tuple(tuple(pair) for pair in state["keys"])]
    for *key, counters in state["cells"]:
        key = tuple(key)
        if len(counters) < len(COUNTERS):  # counted before the conversions were (migration 0025)
            counters = [*counters, *[0] * (len(COUNTERS) - len(counters))]
        target = cells.get(key)
        if target is None:
            cells[key] = [sign * value for value in counters]
        else:
            cells[key] = [a + sign * b for a, b in zip(target, counters, strict=True)]
    for *key, n in state["series"]:
        series[tuple(key)] += sign * n


def _among(column, ids: list[int]):
    """column IN ids: one array parameter on PostgreSQL rather than thousands of parameters."""
    if db.engine.dialect.name == "postgresql":
        return column == any_(literal(ids, ARRAY(BigInteger)))
    return column.in_(ids)


def _current_states(contact_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each contact's state as the ledger and its fields say now (contacts without messages
    contribute nothing and are left out)."""
    d = Delivery.__table__
    by_contact: dict[int, list[Any]] = defaultdict(list)
    rows = db.session.execute(
        select(
            d.c.id,
            d.c.campaign_id,
            d.c.step_id,
            d.c.contact_id,
            d.c.channel,
            d.c.status,
            d.c.reason,
            d.c.due_at,
            d.c.sent_at,
            d.c.opened_at,
            d.c.clicked_at,
            d.c.unsubscribed_at,
        ).where(_among(d.c.contact_id, contact_ids))
    )
    for row in rows:
        by_contact[row.contact_id].append(row)
    if not by_contact:
        return {}
    fields = db.session.execute(
        select(Contact.id, *CONTACT_FIELDS.values()).where(_among(Contact.id, list(by_contact)))
    ).all()
    events: dict[int, list[Any]] = defaultdict(list)
    for event in db.session.execute(
        conversion_events(CONVERSION_KIND)
        .where(_among(ContactEvent.__table__.c.contact_id, list(by_contact)))
        .order_by(ContactEvent.__table__.c.id)
    ):
        events[event.contact_id].append(event)
    tags: dict[int, list[int]] = defaultdict(list)
    for contact_id, tag_id in db.session.execute(
        select(ContactTag.contact_id, ContactTag.tag_id).where(_among(ContactTag.contact_id, list(by_contact)))
    ):
        tags[contact_id].append(tag_id)
    states = {}
    for row in fields:
        contact_id, values = row[0], row[1:]
        dimensions = [["", ""]]
        dimensions += [[name, value or ""] for name, value in zip(CONTACT_FIELDS, values, strict=True)]
        dimensions += [["tag", str(tag_id)] for tag_id in sorted(tags[contact_id])] or [["tag", ""]]
        states[contact_id] = _contact_state(dimensions, by_contact[contact_id], events[contact_id])
    return states


def _insert(model):
    return (postgresql if db.engine.dialect.name == "postgresql" else sqlite).insert(model.__table__)


def _apply(rollups: dict, series: dict) -> None:
    """Add the pending changes to the rollup tables (upserts), then drop cells left empty."""
    rows = [
        dict(zip(("campaign_id", "step_id", "day", "dimension", "key", "channel"), key, strict=True))
        | {"day": date.fromisoformat(key[2])}
        | dict(zip(COUNTERS, counters, strict=True))
        for key, counters in rollups.items()
        if any(counters)
    ]
    if rows:
        statement = _insert(ReportRollup)
        table = ReportRollup.__table__
        statement = statement.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={name: table.c[name] + statement.excluded[name] for name in COUNTERS},
        )
        db.session.execute(statement, rows)
        db.session.execute(
            delete(ReportRollup)
            .where(ReportRollup.messages == 0)
            .where(ReportRollup.campaign_id.in_({row["campaign_id"] for row in rows}))
        )
    points = [
        {
            "campaign_id": key[0],
            "step_id": key[1],
            "channel": key[2],
            "day": date.fromisoformat(key[3]),
            "series": key[4],
            "hour": datetime.fromisoformat(key[5]),
            "count": n,
        }
        for key, n in series.items()
        if n
    ]
    if points:
        statement = _insert(ReportSeriesCount)
        table = ReportSeriesCount.__table__
        statement = statement.on_conflict_do_update(
            index_elements=[c.name for c in table.primary_key.columns],
            set_={"count": table.c["count"] + statement.excluded["count"]},
        )
        db.session.execute(statement, points)
        db.session.execute(
            delete(ReportSeriesCount)
            .where(ReportSeriesCount.count == 0)
            .where(ReportSeriesCount.campaign_id.in_({p["campaign_id"] for p in points}))
        )


def _take_dirty(limit: int) -> list[int]:
    """Up to `limit` noted contacts, taken off the queue (in this transaction)."""
    table = ReportDirtyContact.__table__
    oldest = select(table.c.id).order_by(table.c.id).limit(limit).scalar_subquery()
    taken = db.session.execute(delete(table).where(table.c.id.in_(oldest)).returning(table.c.contact_id))
    contact_ids = sorted({row[0] for row in taken})
    if contact_ids:
        # Later notes of the same contacts are covered by this recount (it reads after them).
        db.session.execute(delete(table).where(_among(table.c.contact_id, contact_ids)))
    return contact_ids


def recount(contact_ids: Iterable[int]) -> None:
    """Bring the rollups up to date for these contacts (in the caller's transaction)."""
    ids = sorted(set(contact_ids))
    if not ids:
        return
    counted = dict(
        db.session.execute(
            select(ReportCountedContact.contact_id, ReportCountedContact.state).where(
                _among(ReportCountedContact.contact_id, ids)
            )
        ).all()
    )
    now = _current_states(ids)
    by_keys: dict[tuple, dict[tuple, list[int]]] = defaultdict(dict)
    series: dict[tuple, int] = defaultdict(int)
    for contact_id in ids:
        if counted.get(contact_id) == now.get(contact_id):
            continue
        _add(counted.get(contact_id), -1, by_keys, series)
        _add(now.get(contact_id), +1, by_keys, series)
    rollups: dict[tuple, list[int]] = {}
    for keys, cells in by_keys.items():
        for (campaign_id, step_id, channel, day), counters in cells.items():
            for dimension, key in keys:
                cell = (campaign_id, step_id, day, dimension, key, channel)
                target = rollups.get(cell)
                rollups[cell] = counters if target is None else [a + b for a, b in zip(target, counters, strict=True)]
    _apply(rollups, series)
    db.session.execute(delete(ReportCountedContact).where(_among(ReportCountedContact.contact_id, ids)))
    if now:
        db.session.execute(
            ReportCountedContact.__table__.insert(),
            [{"contact_id": contact_id, "state": state} for contact_id, state in now.items()],
        )


def _locked() -> bool:
    """One refresh at a time (PostgreSQL: a transaction-scoped advisory lock; SQLite has one
    writer anyway). False when another refresh holds it."""
    if db.engine.dialect.name != "postgresql":
        return True
    return bool(db.session.scalar(select(func.pg_try_advisory_xact_lock(ADVISORY_LOCK))))


def refresh(max_contacts: int | None = None) -> int:
    """Recount every noted contact, a batch per transaction; returns how many were recounted.

    When the queue is emptied, the state's `refreshed_at` becomes the moment this refresh
    started: every change committed before it is counted. Stops early (leaving the rest for the
    next refresh) after `max_contacts`, or when another refresh is already running. Opens and
    clicks still in the tracking intake are written first (as many entries as contacts)."""
    started = utcnow()
    complete = _write_tracking_events(max_contacts)
    done = 0
    while max_contacts is None or done < max_contacts:
        if not _locked():
            db.session.rollback()
            break
        if db.engine.dialect.name == "postgresql":
            # The per-contact reads are index probes; never let JIT compile them.
            db.session.execute(text("SET LOCAL jit = off"))
        batch = _take_dirty(BATCH_CONTACTS if max_contacts is None else min(BATCH_CONTACTS, max_contacts - done))
        if not batch:
            _mark_refreshed(started if complete else None, changed=done > 0)
            db.session.commit()
            return done
        recount(batch)
        db.session.commit()
        done += len(batch)
    if done:
        _mark_refreshed(None, changed=True)
        db.session.commit()
    return done


def _write_tracking_events(limit: int | None) -> bool:
    """Opens and clicks answered before the refresh started are in the ledger before it
    counts, so that "as of" holds for them too (they wait in the tracking intake otherwise).
    False when some are left (the limit, or Redis cannot be read): the rollups are then not
    complete as of now."""
    try:
        written = intake.flush(limit)
    except RedisError:
        db.session.rollback()
        log.warning("the tracking intake could not be read: opens and clicks since are counted later", exc_info=True)
        return False
    return limit is None or written < limit


def _mark_refreshed(at: datetime | None, changed: bool) -> None:
    """Note when the rollups were last complete (`at`, if they are now), and give figures
    computed from them a new generation if anything `changed`."""
    forget_state()
    state = db.session.get(ReportRollupState, STATE_ID)
    if state is None:
        if at is not None:
            db.session.add(ReportRollupState(id=STATE_ID, refreshed_at=at, generation=uuid.uuid4().hex))
        return
    if at is not None:
        state.refreshed_at = at
    if changed:
        state.generation = uuid.uuid4().hex


def max_age() -> timedelta:
    return timedelta(seconds=current_app.config["REPORT_ROLLUP_MAX_AGE_SECONDS"])


# The state as this process last read it: for this long, readers take it from here instead of
# asking the database on every page view (a round trip each). Figures stay within the age limit:
# whether they are too old is judged from the `refreshed_at` read, which only a refresh moves
# forward; a new generation made by another process is seen this much later at most.
STATE_READ_SECONDS = 1.0
_last_read: tuple[float, Any] | None = None


def _state():
    global _last_read
    kept = _last_read
    if kept is not None and time.monotonic() - kept[0] < STATE_READ_SECONDS:
        return kept[1]
    state = db.session.execute(
        select(ReportRollupState.refreshed_at, ReportRollupState.generation).where(ReportRollupState.id == STATE_ID)
    ).first()
    _last_read = (time.monotonic(), state)
    return state


def forget_state() -> None:
    """Read the state from the database next time (this process changed it, or its database
    was replaced)."""
    global _last_read
    _last_read = None


def fresh_state(may_refresh: bool = True) -> tuple[datetime | None, str] | None:
    """(as of, generation) of the rollups, refreshing them first when they are past half the
    age the setting allows: figures computed from them are kept for other readers for at most
    the other half (portal.recent), so no page shows figures older than the setting. A reader
    refreshes at most a few batches itself; a bigger backlog is the periodic job's, and the
    page then says how old the figures are. Where a refresh is due and `may_refresh` is false,
    None."""
    state = _state()
    if _past_half(state):
        if not may_refresh:
            return None
        # One thread of the process refreshes; the others that find the rollups past half
        # their age meanwhile wait for it and take what it read, instead of each repeating it.
        with _refreshing:
            state = _state()
            if _past_half(state):
                db.session.commit()  # the refresh commits per batch; start it on a clean transaction
                refresh(max_contacts=5 * BATCH_CONTACTS)
                forget_state()
                state = _state()
    return (state.refreshed_at, state.generation) if state is not None else (None, "")


_refreshing = threading.Lock()


def _past_half(state) -> bool:
    return state is None or utcnow() - state.refreshed_at > max_age() / 2


def figures_changed() -> None:
    """Give figures computed from the rollups a new generation (in the caller's transaction):
    something they are shown with changed (a cost entered), so pages kept rendered with them
    are made again."""
    forget_state()
    state = db.session.get(ReportRollupState, STATE_ID)
    if state is not None:
        state.generation = uuid.uuid4().hex


def rebuild() -> int:
    """Count everything again from the ledger (after adding a dimension, or to repair)."""
    db.session.execute(delete(ReportRollup))
    db.session.execute(delete(ReportSeriesCount))
    db.session.execute(delete(ReportCountedContact))
    db.session.execute(
        ReportDirtyContact.__table__.insert().from_select(["contact_id"], select(Delivery.contact_id).distinct())
    )
    db.session.commit()
    return refresh()
