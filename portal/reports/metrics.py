"""Campaign figures computed by the database: every count, sum and distinct is an SQL aggregate.

The ledger (`deliveries`, one row per step and contact) and the tracking events
(`contact_events` carrying a `delivery_id`) are read in one statement that yields every
grouping at once (totals, campaign, step, channel, province, region, industry, lifecycle stage, tag).
The filtered ledger, joined to each message's open/click/unsubscribe flags (tracking events
grouped by delivery), is summed in a single pass per campaign-and-contact pair, per step and
per channel (GROUPING SETS on PostgreSQL; one GROUP BY each, UNION ALL, on SQLite); the pair
roll-up is then grouped by total, campaign and contact fields the same way. No intermediate
result has a row per message. Python only divides the sums into rates.

Definitions (also printed in the PDF appendix, see DEFINITIONS):
- audience: ledger rows not excluded at planning; attempted: sent + bounced + failed;
  delivered: sent (accepted by the receiving server); hard bounce: bounced; soft bounce:
  failed with reason soft_bounce. Test sends are not in the ledger, so never counted.
- unique opens: delivered messages with an open or a click (a click proves an open even when
  images were blocked); unique clicks: delivered messages with a click; unsubscribes:
  messages whose unsubscribe link was used.
- reached: campaign-and-contact pairs with a delivered message.
- conversions: contacts with an event of the chosen kind no earlier than the first message
  the campaign delivered to them and less than N days after the last one; for a step, within
  N days after that step's message. Revenue attributed: the "amount" of those events.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from portal.audience.models import Contact, ContactEvent, ContactTag, Tag
from portal.audit import AuditEvent
from portal.campaigns.models import Campaign, CampaignStep
from portal.delivery.models import SETTLED_STATUSES, Delivery, DeliveryStatus
from portal.extensions import db
from portal.recent import Recent
from portal.reports import rollups
from portal.reports.models import CampaignCost, ReportRollup, ReportSeriesCount

# The dimensions a person groups the dashboard's table by (campaign and step have their own tables).
CONTACT_DIMENSIONS = (*rollups.CONTACT_FIELDS, "tag")
DIMENSIONS = ("campaign", "step", "channel", *CONTACT_DIMENSIONS)
CONVERSION_KINDS = ("purchase", "form_submit", "download", "webinar_attended", "sales_consultation", "mql")


@dataclass(frozen=True)
class Filters:
    """What the figures cover. Dates are calendar days in `timezone`, both inclusive, and
    select messages by when they were sent (or were due, for those never sent)."""

    campaign_ids: tuple[int, ...] = ()  # empty: every campaign
    date_from: date | None = None
    date_to: date | None = None
    channel: str = ""
    step_id: int | None = None
    conversion_kind: str = "purchase"
    conversion_days: int = 30
    bucket: str = "day"  # time series per "day" or "hour"
    timezone: str = "Asia/Shanghai"

    def as_params(self) -> dict[str, Any]:
        """JSON-safe, for a report's stored parameters."""
        return {
            "campaign_ids": list(self.campaign_ids),
            "date_from": self.date_from.isoformat() if self.date_from else "",
            "date_to": self.date_to.isoformat() if self.date_to else "",
            "channel": self.channel,
            "step_id": self.step_id,
            "conversion_kind": self.conversion_kind,
            "conversion_days": self.conversion_days,
            "bucket": self.bucket,
            "timezone": self.timezone,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Filters:
        def day(value: Any) -> date | None:
            try:
                return date.fromisoformat(str(value)) if value else None
            except ValueError:
                return None

        def number(value: Any, default: int, low: int, high: int) -> int:
            try:
                return max(low, min(high, int(value)))
            except (TypeError, ValueError):
                return default

        ids = params.get("campaign_ids") or []
        if isinstance(ids, (str, int)):
            ids = [ids]
        kind = str(params.get("conversion_kind") or "purchase")
        step = params.get("step_id")
        return cls(
            campaign_ids=tuple(sorted({int(i) for i in ids if str(i).isdigit()})),
            date_from=day(params.get("date_from")),
            date_to=day(params.get("date_to")),
            channel=str(params.get("channel") or "") if params.get("channel") in ("email", "sms", "wecom") else "",
            step_id=int(step) if str(step or "").isdigit() else None,
            conversion_kind=kind if kind in CONVERSION_KINDS else "purchase",
            conversion_days=number(params.get("conversion_days"), 30, 1, 365),
            bucket="hour" if params.get("bucket") == "hour" else "day",
            timezone=str(params.get("timezone") or "Asia/Shanghai"),
        )

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """The date range as UTC instants: [start of date_from, start of the day after date_to)."""
        zone = ZoneInfo(self.timezone)
        start = datetime.combine(self.date_from, time(), zone).astimezone(UTC) if self.date_from else None
        end = datetime.combine(self.date_to + timedelta(days=1), time(), zone).astimezone(UTC) if self.date_to else None
        return start, end


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass
class Metrics:
    """The sums of one group (one campaign, one province...), and the rates derived from them."""

    key: str = ""
    label: str = ""
    audience: int = 0
    attempted: int = 0
    delivered: int = 0
    hard_bounces: int = 0
    soft_bounces: int = 0
    opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    reached: int = 0
    conversions: int = 0
    attributed_revenue: float = 0.0
    # From campaign_costs; None when nobody entered a cost (no CPA or ROI then).
    cost: float | None = None
    entered_revenue: float = 0.0
    notes: str = ""

    @property
    def delivery_rate(self) -> float | None:
        return _ratio(self.delivered, self.attempted)

    @property
    def bounce_rate(self) -> float | None:
        return _ratio(self.hard_bounces + self.soft_bounces, self.attempted)

    @property
    def open_rate(self) -> float | None:
        return _ratio(self.opens, self.delivered)

    @property
    def click_rate(self) -> float | None:
        return _ratio(self.clicks, self.delivered)

    @property
    def click_to_open_rate(self) -> float | None:
        return _ratio(self.clicks, self.opens)

    @property
    def unsubscribe_rate(self) -> float | None:
        return _ratio(self.unsubscribes, self.delivered)

    @property
    def conversion_rate(self) -> float | None:
        return _ratio(self.conversions, self.reached)

    @property
    def revenue(self) -> float:
        return self.attributed_revenue + self.entered_revenue

    @property
    def cost_per_acquisition(self) -> float | None:
        return _ratio(self.cost, self.conversions) if self.cost is not None else None

    @property
    def roi(self) -> float | None:
        """(revenue - cost) / cost."""
        return _ratio(self.revenue - self.cost, self.cost) if self.cost else None


@dataclass
class Series:
    """Counts per time bucket ("2026-11-24" or "2026-11-24 09:00"), oldest first."""

    buckets: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    opens: list[int] = field(default_factory=list)
    clicks: list[int] = field(default_factory=list)


@dataclass
class Goal:
    campaign_id: int
    campaign: str
    metric: str
    target: float
    actual: float | None
    days: int

    @property
    def gap(self) -> float | None:
        """Actual minus target, in the metric's unit (negative: short of the target)."""
        return None if self.actual is None else self.actual - self.target

    @property
    def met(self) -> bool:
        return self.actual is not None and self.actual >= self.target


@dataclass
class Alert:
    at: datetime
    campaign_id: int
    campaign: str
    reason: str


# --- SQL building blocks -----------------------------------------------------------------


def _dialect() -> str:
    return db.engine.dialect.name


def _plus_days(column: ColumnElement, days: int) -> ColumnElement:
    """column + `days` days, in the database (SQLite keeps datetimes as ISO text)."""
    if _dialect() == "postgresql":
        return column + func.make_interval(0, 0, 0, days)
    # The same text layout SQLAlchemy stores ("YYYY-MM-DD HH:MM:SS.fff"), so text comparison is time order.
    return func.strftime("%Y-%m-%d %H:%M:%f", column, f"+{int(days)} days")


def _bucket(column: ColumnElement, filters: Filters) -> ColumnElement:
    """The local day or hour a UTC instant falls in, as text."""
    if _dialect() == "postgresql":
        layout = "YYYY-MM-DD HH24:00" if filters.bucket == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone(filters.timezone, column), layout)
    # SQLite has no time-zone database: shift by the zone's current offset (China has no DST).
    offset = datetime.now(ZoneInfo(filters.timezone)).utcoffset() or timedelta()
    layout = "%Y-%m-%d %H:00" if filters.bucket == "hour" else "%Y-%m-%d"
    return func.strftime(layout, column, f"{int(offset.total_seconds())} seconds")


def _flag(condition: ColumnElement) -> ColumnElement:
    return case((condition, 1), else_=0)


def _grouping_sets(query, keys: dict[str, ColumnElement], sets: dict[str, tuple[str, ...]]):
    """`query` (its FROM, WHERE and aggregate columns) grouped by each named set of `keys` at once:
    one row per group, with a "grouping" column naming its set and NULL in the keys outside it.

    PostgreSQL groups every set in one pass over the input (GROUPING SETS); SQLite, which has no
    grouping sets, gets one GROUP BY per set joined by UNION ALL: the same rows."""
    # Only keys some set groups by (GROUPING() accepts no others).
    names = [name for name in keys if any(name in members for members in sets.values())]
    if _dialect() == "postgresql" and names:
        # GROUPING(keys...) has the bit of each key outside the row's set, the first key highest.
        def outside(members: tuple[str, ...]) -> int:
            return sum(1 << (len(names) - 1 - i) for i, name in enumerate(names) if name not in members)

        mask = func.grouping(*(keys[n] for n in names))
        which = case(*((mask == outside(members), literal(name, String)) for name, members in sets.items()))
        return query.add_columns(which.label("grouping"), *(keys[n].label(n) for n in names)).group_by(
            func.grouping_sets(*(tuple_(*(keys[n] for n in members)) for members in sets.values()))
        )
    parts = []
    for name, members in sets.items():
        columns = [(keys[n] if n in members else null()).label(n) for n in names]
        parts.append(
            query.add_columns(literal(name, String).label("grouping"), *columns).group_by(*(keys[n] for n in members))
        )
    return union_all(*parts)


def _message_sums(filters: Filters, dimensions: tuple[str, ...], only_contacts=None):
    """The filtered ledger joined to each message's tracking flags, summed in one pass per
    campaign-and-contact pair ("pair"), and per "step" and "channel" when those are asked for."""
    d = Delivery.__table__
    status = d.c.status
    delivered = status == DeliveryStatus.SENT.value
    # count(*) FILTER (WHERE ...) rather than sum(CASE ...): the cheapest aggregate per message.
    query = select(
        func.count().filter(status != DeliveryStatus.EXCLUDED.value).label("audience"),
        func.count().filter(status.in_([s.value for s in SETTLED_STATUSES])).label("attempted"),
        func.count().filter(delivered).label("delivered"),
        func.count().filter(status == DeliveryStatus.BOUNCED.value).label("hard_bounces"),
        func.count()
        .filter(and_(status == DeliveryStatus.FAILED.value, d.c.reason == "soft_bounce"))
        .label("soft_bounces"),
        # The ledger row carries its first open / click / unsubscribe (set by the tracking
        # endpoints), so no event is read here.
        func.count().filter(and_(delivered, d.c.opened_at.is_not(None))).label("opens"),
        func.count().filter(and_(delivered, d.c.clicked_at.is_not(None))).label("clicks"),
        func.count().filter(d.c.unsubscribed_at.is_not(None)).label("unsubscribes"),
        func.min(d.c.sent_at).filter(delivered).label("first_sent_at"),
        func.max(d.c.sent_at).filter(delivered).label("last_sent_at"),
    ).select_from(d)
    query = _ledger_where(query, d, filters, only_contacts)
    keys = {name: d.c[name] for name in ("campaign_id", "contact_id", "step_id", "channel")}
    sets = {"pair": ("campaign_id", "contact_id")}
    if "step" in dimensions:
        sets["step"] = ("step_id",)
    if "channel" in dimensions:
        sets["channel"] = ("channel",)
    return _grouping_sets(query, keys, sets).cte("messages")


SUM_COLUMNS = (
    "audience",
    "attempted",
    "delivered",
    "hard_bounces",
    "soft_bounces",
    "opens",
    "clicks",
    "unsubscribes",
    "reached",
    "conversions",
)

# What each message adds to its groups (reached and conversions are counted per contact).
MESSAGE_SUMS = tuple(name for name in SUM_COLUMNS if name not in ("reached", "conversions"))


def _branch(dimension: str, key: ColumnElement, source, group: bool = True, **sums: ColumnElement):
    columns = [literal(dimension, String).label("dimension"), cast(key, String).label("key")]
    columns += [cast(func.coalesce(sums[name], 0), Integer).label(name) for name in SUM_COLUMNS]
    columns.append(cast(func.coalesce(sums["revenue"], 0.0), Float).label("revenue"))
    query = select(*columns).select_from(source)
    return query.group_by(key) if group else query


def grouped_statement(filters: Filters, dimensions: tuple[str, ...] = DIMENSIONS, converting_only: bool = False):
    """One statement: a "total" row, then a row per key of each requested dimension.

    The ledger is read once for the message sums (see _message_sums) and once more, delivered
    messages only, for the conversions that followed each message; everything else groups the
    per campaign-and-contact roll-up ("rc", a few hundred thousand rows at most per million messages).

    `converting_only` reads only the messages of contacts with an event of the conversion kind:
    the conversions and attributed revenue are then exact and everything else is partial (what
    the rollups do not hold, computed from a small part of the ledger)."""
    e = ContactEvent.__table__
    only = select(e.c.contact_id).where(e.c.kind == filters.conversion_kind) if converting_only else None
    messages = _message_sums(filters, dimensions, only)
    conv = rollups.conversion_events(filters.conversion_kind).subquery("conv")

    # Per campaign and contact: sums over its messages, first and last delivery.
    pair = (
        select(messages.c.campaign_id, messages.c.contact_id, *(messages.c[name] for name in MESSAGE_SUMS))
        .add_columns(_flag(messages.c.delivered > 0).label("reached"), messages.c.first_sent_at)
        .add_columns(messages.c.last_sent_at)
        # Only pair rows have a contact; said this way (rather than by their grouping) the planner
        # expects most rows to pass and joins them by hashing instead of a quarter-million index probes.
        .where(messages.c.contact_id.is_not(None))
        .cte("pair")
    )
    pair_conv = (
        select(
            pair.c.campaign_id,
            pair.c.contact_id,
            func.count(conv.c.id).label("events"),
            func.sum(conv.c.amount).label("revenue"),
        )
        .select_from(pair)
        .join(
            conv,
            and_(
                conv.c.contact_id == pair.c.contact_id,
                conv.c.occurred_at >= pair.c.first_sent_at,
                conv.c.occurred_at < _plus_days(pair.c.last_sent_at, filters.conversion_days),
            ),
        )
        .group_by(pair.c.campaign_id, pair.c.contact_id)
        .subquery("pair_conv")
    )
    rc = (
        select(
            pair,
            _flag(func.coalesce(pair_conv.c.events, 0) > 0).label("converted"),
            func.coalesce(pair_conv.c.revenue, 0.0).label("revenue"),
        )
        .select_from(pair)
        .outerjoin(
            pair_conv,
            and_(pair_conv.c.campaign_id == pair.c.campaign_id, pair_conv.c.contact_id == pair.c.contact_id),
        )
        .cte("rc")
    )

    def pair_sums(source) -> dict[str, ColumnElement]:
        sums = {name: func.sum(source.c[name]) for name in SUM_COLUMNS if name != "conversions"}
        sums["conversions"] = func.sum(source.c.converted)
        sums["revenue"] = func.sum(source.c.revenue)
        return sums

    # The total, the campaigns and the contact fields: one grouping of rc (joined to contacts if needed).
    contacts = Contact.__table__
    keys = {"campaign": rc.c.campaign_id, **rollups.CONTACT_FIELDS}
    keys = {name: column for name, column in keys.items() if name in dimensions}
    source = rc.join(contacts, contacts.c.id == rc.c.contact_id) if set(keys) - {"campaign"} else rc
    sets: dict[str, tuple[str, ...]] = {"total": (), **{name: (name,) for name in keys}}
    # Summed first by every key together (a few hundred rows), which the sets then add up.
    finest = (
        select(*(column.label(name) for name, column in keys.items()))
        .add_columns(*(column.label(name) for name, column in pair_sums(rc).items()))
        .select_from(source)
        .group_by(*keys.values())
        .subquery("by_fields")
    )
    sums = [func.sum(finest.c[name]).label(name) for name in [*SUM_COLUMNS, "revenue"]]
    finest_keys = {name: finest.c[name] for name in keys}
    by_pair = _grouping_sets(select(*sums).select_from(finest), finest_keys, sets).subquery("by_pair")
    key = (
        case(*((by_pair.c.grouping == name, cast(by_pair.c[name], String)) for name in keys), else_=literal(""))
        if keys
        else literal("")
    )
    branches = [
        select(by_pair.c.grouping.label("dimension"), key.label("key"))
        .add_columns(*(cast(func.coalesce(by_pair.c[name], 0), Integer).label(name) for name in SUM_COLUMNS))
        .add_columns(cast(func.coalesce(by_pair.c.revenue, 0.0), Float).label("revenue"))
    ]
    if "tag" in dimensions:
        tags, contact_tags = Tag.__table__, ContactTag.__table__
        joined = rc.outerjoin(contact_tags, contact_tags.c.contact_id == rc.c.contact_id).outerjoin(
            tags, tags.c.id == contact_tags.c.tag_id
        )
        branches.append(_branch("tag", func.coalesce(tags.c.name, ""), joined, **pair_sums(rc)))

    if "step" in dimensions or "channel" in dimensions:
        # Per message: converted when the event came within N days after that message.
        d = Delivery.__table__
        row_conv = _ledger_where(
            select(d.c.step_id, d.c.channel, d.c.contact_id, conv.c.id.label("event_id"), conv.c.amount)
            .select_from(d)
            .join(
                conv,
                and_(
                    conv.c.contact_id == d.c.contact_id,
                    conv.c.occurred_at >= d.c.sent_at,
                    conv.c.occurred_at < _plus_days(d.c.sent_at, filters.conversion_days),
                ),
            )
            .where(d.c.status == DeliveryStatus.SENT.value),
            d,
            filters,
            only,
        ).cte("row_conv")
        for dimension in ("step", "channel"):
            if dimension not in dimensions:
                continue
            rows = messages.alias(f"{dimension}_rows")
            message_sums: dict[str, ColumnElement] = {name: rows.c[name] for name in MESSAGE_SUMS}
            message_sums["conversions"] = literal(0)
            message_sums["revenue"] = literal(0.0)
            if dimension == "step":
                # A step has at most one message per contact (the ledger's unique step and
                # contact), so the contacts it reached are its delivered messages.
                message_sums["reached"] = rows.c.delivered
                source = rows
            else:
                # Several steps may share a channel: its contacts are counted once each.
                reach = (
                    _ledger_where(
                        select(d.c.channel, func.count(func.distinct(d.c.contact_id)).label("reached")),
                        d,
                        filters,
                        only,
                    )
                    .where(d.c.status == DeliveryStatus.SENT.value)
                    .group_by(d.c.channel)
                    .subquery("channel_reach")
                )
                message_sums["reached"] = reach.c.reached
                source = rows.outerjoin(reach, reach.c.channel == rows.c.channel)
            key_column = rows.c.step_id if dimension == "step" else rows.c.channel
            branches.append(
                _branch(dimension, key_column, source, group=False, **message_sums).where(rows.c.grouping == dimension)
            )
            # An event counts once per group even when several messages of the group preceded it.
            distinct_events = (
                select(row_conv.c[f"{dimension}_id" if dimension == "step" else "channel"].label("key"))
                .add_columns(row_conv.c.contact_id, row_conv.c.event_id, row_conv.c.amount)
                .distinct()
                .subquery(f"{dimension}_events")
            )
            zero = {name: literal(0) for name in SUM_COLUMNS}
            zero["conversions"] = func.count(func.distinct(distinct_events.c.contact_id))
            zero["revenue"] = func.sum(distinct_events.c.amount)
            branches.append(_branch(f"{dimension}_conversions", distinct_events.c.key, distinct_events, **zero))
    return union_all(*branches)


def _ledger_where(query, d, filters: Filters, only_contacts=None):
    """The filters' conditions on the deliveries table `d` (and only the messages of
    `only_contacts`, a selection of contact ids, when given)."""
    if only_contacts is not None:
        query = query.where(d.c.contact_id.in_(only_contacts))
    if filters.campaign_ids:
        query = query.where(d.c.campaign_id.in_(filters.campaign_ids))
    if filters.channel:
        query = query.where(d.c.channel == filters.channel)
    if filters.step_id:
        query = query.where(d.c.step_id == filters.step_id)
    start, end = filters.bounds()
    when = func.coalesce(d.c.sent_at, d.c.due_at)
    if start is not None:
        query = query.where(when >= start)
    if end is not None:
        query = query.where(when < end)
    return query


def series_statement(filters: Filters):
    """Delivered messages, first opens and first clicks per time bucket, from the ledger's
    own send, open and click times: one read of the filtered ledger."""
    d = Delivery.__table__
    delivered = d.c.status == DeliveryStatus.SENT.value
    keys = {
        "sent": _bucket(d.c.sent_at, filters),
        "opens": _bucket(d.c.opened_at, filters),
        "clicks": _bucket(d.c.clicked_at, filters),
    }
    counted = _ledger_where(
        select(func.count().label("n")).select_from(d).where(delivered, d.c.sent_at.is_not(None)), d, filters
    )
    sets = {name: (name,) for name in keys}
    by_bucket = _grouping_sets(counted, keys, sets).subquery("buckets")
    bucket = func.coalesce(by_bucket.c.sent, by_bucket.c.opens, by_bucket.c.clicks)
    # A message never opened is in the opens grouping under a NULL bucket: not an open.
    return select(by_bucket.c.grouping.label("series"), bucket.label("bucket"), by_bucket.c.n).where(
        bucket.is_not(None)
    )


# --- results -----------------------------------------------------------------------------


@dataclass
class Figures:
    """Everything the dashboard, the PDF and the workbook show, computed once."""

    filters: Filters
    total: Metrics
    groups: dict[str, list[Metrics]]
    series: Series
    goals: list[Goal]
    alerts: list[Alert]
    # The figures include every change recorded before this moment.
    as_of: datetime | None = None

    @property
    def funnel(self) -> list[tuple[str, int]]:
        return [
            ("delivered", self.total.delivered),
            ("opened", self.total.opens),
            ("clicked", self.total.clicks),
            ("converted", self.total.conversions),
        ]


def _report_settings() -> None:
    """Settings for this transaction only (SET LOCAL), on PostgreSQL.

    work_mem: let the hash aggregates stay in memory (the default 4 MB spills a quarter-million
    pair roll-up to disk many times over). Reports run one at a time per worker, so the memory
    is bounded. jit off: these statements' costs cross the JIT threshold, and compiling them
    takes longer (over two seconds for a million deliveries) than the compiled code saves."""
    if _dialect() == "postgresql":
        db.session.execute(text("SET LOCAL work_mem = '128MB'"))
        db.session.execute(text("SET LOCAL jit = off"))


def _exact(
    filters: Filters, dimensions: tuple[str, ...], converting_only: bool = False
) -> tuple[Metrics, dict[str, dict[str, Metrics]]]:
    """The total and each dimension's Metrics by key, computed from the ledger."""
    _report_settings()
    found: dict[str, dict[str, Metrics]] = {d: {} for d in dimensions}
    total = Metrics(key="", label="")
    for row in db.session.execute(grouped_statement(filters, dimensions, converting_only)).mappings():
        dimension = row["dimension"]
        if dimension.endswith("_conversions"):
            target = found[dimension.removesuffix("_conversions")].setdefault(row["key"], Metrics(key=row["key"]))
            target.conversions = row["conversions"]
            target.attributed_revenue = float(row["revenue"])
            continue
        metrics = total if dimension == "total" else found[dimension].setdefault(row["key"], Metrics(key=row["key"]))
        for name in SUM_COLUMNS:
            if dimension in ("step", "channel") and name == "conversions":
                continue
            setattr(metrics, name, row[name])
        if dimension not in ("step", "channel"):
            metrics.attributed_revenue = float(row["revenue"])
    return total, found


def rollups_answer(filters: Filters) -> bool:
    """Whether the rollups hold these figures exactly. A campaign's reach counts each contact
    once over all its messages, which no sum of days, steps or channels can give; so a date
    range, a step, a channel or several (but not all) campaigns are computed from the ledger."""
    return (
        filters.date_from is None
        and filters.date_to is None
        and not filters.channel
        and filters.step_id is None
        and filters.timezone == rollups.REPORT_TIMEZONE
        and len(filters.campaign_ids) <= 1
    )


def _rolled_up(filters: Filters, dimensions: tuple[str, ...]) -> tuple[Metrics, dict[str, dict[str, Metrics]]]:
    """The figures from the rollups; conversions too when they count the chosen event and
    window (rollups.CONVERSION_KIND and CONVERSION_DAYS, the default), otherwise from the
    ledger of the contacts who had such an event only."""
    rolled_conversions = (filters.conversion_kind, filters.conversion_days) == (
        rollups.CONVERSION_KIND,
        rollups.CONVERSION_DAYS,
    )
    r = ReportRollup.__table__
    keys = (r.c.campaign_id, r.c.step_id, r.c.channel, r.c.dimension, r.c.key)
    contact_dimensions = [d for d in dimensions if d in CONTACT_DIMENSIONS]
    query = (
        select(*keys, *(func.sum(r.c[name]).label(name) for name in rollups.COUNTERS))
        .where(r.c.dimension.in_(["", *contact_dimensions]))
        .group_by(*keys)
    )
    if filters.campaign_ids:
        query = query.where(r.c.campaign_id.in_(filters.campaign_ids))
    # A channel's contacts are counted once within the campaign chosen, or across all of them.
    channel_reach = "channel_reached" if filters.campaign_ids else "all_channel_reached"
    total = Metrics(key="", label="")
    found: dict[str, dict[str, Metrics]] = {d: {} for d in dimensions}

    def add(target: Metrics, row: Any, reached: int, counted: str = "") -> None:
        for name in MESSAGE_SUMS:
            setattr(target, name, getattr(target, name) + row[name])
        target.reached += reached
        if rolled_conversions:
            target.conversions += row[f"{counted}converted"]
            target.attributed_revenue += row[f"{counted}revenue"]

    for row in db.session.execute(query).mappings():
        if row["dimension"]:
            add(found[row["dimension"]].setdefault(row["key"], Metrics(key=row["key"])), row, row["reached"])
            continue
        add(total, row, row["reached"])
        # A step has one message per contact: the contacts it reached are its delivered messages.
        for dimension, key, reached, counted in (
            ("campaign", row["campaign_id"], row["reached"], ""),
            ("step", row["step_id"], row["delivered"], "step_"),
            ("channel", row["channel"], row[channel_reach], channel_reach.removesuffix("reached")),
        ):
            if dimension in found:
                add(found[dimension].setdefault(str(key), Metrics(key=str(key))), row, reached, counted)
    if "tag" in found:
        found["tag"] = _tag_names(found["tag"])
    if rolled_conversions:
        return total, found
    converted_total, converted = _exact(filters, dimensions, converting_only=True)
    pairs = [(total, converted_total)]
    pairs += [(metrics, converted[d].get(key)) for d in dimensions for key, metrics in found[d].items()]
    for target, source in pairs:
        if source is not None:
            target.conversions, target.attributed_revenue = source.conversions, source.attributed_revenue
    return total, found


def _tag_names(by_id: dict[str, Metrics]) -> dict[str, Metrics]:
    """Rollups keep tags by id (a renamed tag keeps its figures); the figures show the name."""
    ids = [int(key) for key in by_id if key]
    names = {str(i): name for i, name in db.session.execute(select(Tag.id, Tag.name).where(Tag.id.in_(ids)))}
    by_name: dict[str, Metrics] = {}
    for key, metrics in by_id.items():
        metrics.key = names.get(key, "") if key else ""
        by_name[metrics.key] = metrics
    return by_name


def _uncosted(filters: Filters, dimensions: tuple[str, ...]) -> tuple[Metrics, dict[str, dict[str, Metrics]]]:
    total, found = _rolled_up(filters, dimensions) if rollups_answer(filters) else _exact(filters, dimensions)
    _label(found)
    return total, found


def _finished(
    total: Metrics, found: dict[str, dict[str, Metrics]], filters: Filters
) -> tuple[Metrics, dict[str, list[Metrics]]]:
    """Costs added (they are entered by hand, so always read as they are now); revenue to the
    fen (the database and the rollups add the same amounts in different orders, and a float
    sum's last bits depend on the order); largest first."""
    for metrics in (total, *(m for rows in found.values() for m in rows.values())):
        metrics.attributed_revenue = round(metrics.attributed_revenue, 2)
    if "campaign" in found:
        _add_costs(total, found["campaign"], filters)
    return total, {d: sorted(rows.values(), key=lambda m: (-m.audience, m.label)) for d, rows in found.items()}


def grouped(filters: Filters, dimensions: tuple[str, ...] = DIMENSIONS) -> tuple[Metrics, dict[str, list[Metrics]]]:
    """The total and, per dimension asked for, one Metrics per key (labels filled in), largest
    audience first: from the rollups when they hold the figures (see rollups_answer)."""
    if rollups_answer(filters):
        rollups.fresh_state()
    return _finished(*_uncosted(filters, dimensions), filters)


def recomputed(filters: Filters, dimensions: tuple[str, ...] = DIMENSIONS) -> tuple[Metrics, dict[str, list[Metrics]]]:
    """The same figures computed from the whole ledger, whatever the rollups hold."""
    total, found = _exact(filters, dimensions)
    _label(found)
    return _finished(total, found, filters)


def _label(found: dict[str, dict[str, Metrics]]) -> None:
    """Campaign and step names for their ids; "" keys of contact fields read as not set."""
    if found.get("campaign"):
        ids = [int(k) for k in found["campaign"]]
        names = dict(db.session.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(ids))).all())
        for key, metrics in found["campaign"].items():
            metrics.label = names.get(int(key), f"#{key}")
    if found.get("step"):
        ids = [int(k) for k in found["step"]]
        rows = db.session.execute(
            select(CampaignStep.id, CampaignStep.campaign_id, CampaignStep.position, CampaignStep.channel).where(
                CampaignStep.id.in_(ids)
            )
        ).all()
        steps = {row.id: row for row in rows}
        for key, metrics in found["step"].items():
            step = steps.get(int(key))
            metrics.label = f"#{key}" if step is None else f"#{step.id} · {step.channel or '-'}"
    for dimension in ("channel", *CONTACT_DIMENSIONS):
        for key, metrics in found.get(dimension, {}).items():
            metrics.label = key


def costs_by_campaign(campaign_ids: list[int]) -> dict[int, tuple[float, float, str]]:
    """campaign id -> (cost, entered revenue, notes) for campaigns with at least one entry."""
    rows = db.session.execute(
        select(
            CampaignCost.campaign_id,
            func.sum(CampaignCost.cost),
            func.sum(CampaignCost.revenue),
            func.aggregate_strings(func.nullif(CampaignCost.note, ""), "; "),
        )
        .where(CampaignCost.campaign_id.in_(campaign_ids))
        .group_by(CampaignCost.campaign_id)
    ).all()
    return {row[0]: (float(row[1] or 0), float(row[2] or 0), row[3] or "") for row in rows}


def _add_costs(total: Metrics, campaigns: dict[str, Metrics], filters: Filters) -> None:
    """Cost and entered revenue are per campaign, whatever the date range (entries are totals)."""
    ids = [int(k) for k in campaigns] or list(filters.campaign_ids)
    costs = costs_by_campaign(ids)
    for key, metrics in campaigns.items():
        if int(key) in costs:
            metrics.cost, metrics.entered_revenue, metrics.notes = costs[int(key)]
    if costs:
        total.cost = sum(c[0] for c in costs.values())
        total.entered_revenue = sum(c[1] for c in costs.values())


def series(filters: Filters, recompute: bool = False) -> Series:
    """Delivered messages, first opens and first clicks per time bucket: from the rollups when
    they hold them, else (or when asked to `recompute`) from the ledger."""
    counts: dict[str, dict[str, int]] = {"sent": {}, "opens": {}, "clicks": {}}
    if rollups_answer(filters) and not recompute:
        table = ReportSeriesCount.__table__
        query = select(table.c.series, table.c.hour, func.sum(table.c.count)).group_by(table.c.series, table.c.hour)
        if filters.campaign_ids:
            query = query.where(table.c.campaign_id.in_(filters.campaign_ids))
        zone = ZoneInfo(filters.timezone)
        layout = "%Y-%m-%d %H:00" if filters.bucket == "hour" else "%Y-%m-%d"
        for name, hour, n in db.session.execute(query):
            bucket = hour.astimezone(zone).strftime(layout)
            counts[name][bucket] = counts[name].get(bucket, 0) + n
    else:
        _report_settings()
        for row in db.session.execute(series_statement(filters)):
            counts[row.series][row.bucket] = row.n
    buckets = sorted(set().union(*counts.values()))
    return Series(
        buckets=buckets,
        sent=[counts["sent"].get(b, 0) for b in buckets],
        opens=[counts["opens"].get(b, 0) for b in buckets],
        clicks=[counts["clicks"].get(b, 0) for b in buckets],
    )


RATE_GOALS = {"conversion_rate", "click_rate", "open_rate"}


def goals(filters: Filters, campaigns: dict[str, Metrics]) -> list[Goal]:
    """Each selected campaign's goal against what it achieved within its own goal horizon.

    Rate targets are percentages (15 = 15 %); actuals are given in the same unit."""
    ids = [int(k) for k in campaigns] or list(filters.campaign_ids)
    result = []
    columns = (Campaign.id, Campaign.name, Campaign.goal_metric, Campaign.goal_target, Campaign.goal_days)
    for campaign in db.session.execute(select(*columns).where(Campaign.id.in_(ids)).order_by(Campaign.name)):
        if not campaign.goal_target:
            continue
        window = replace(filters, campaign_ids=(campaign.id,), conversion_days=campaign.goal_days or 30)
        if campaign.goal_metric == "mql_count":
            window = replace(window, conversion_kind="mql")
        # The main figures already hold this campaign's row when the windows agree: reuse it.
        same = window == replace(filters, campaign_ids=window.campaign_ids)
        metrics = campaigns.get(str(campaign.id)) if same else None
        if metrics is None:
            # Kept like the main figures: the dashboard asks for the same goals on every view.
            rollups_as_of, generation = rollups.fresh_state()
            _at, (metrics, by_campaign) = _computed.get(
                (window, "goal"),
                lambda w=window: grouped(w, ("campaign",)),
                rollups.max_age(),
                generation,
                rollups_as_of,
            )
            metrics = by_campaign["campaign"][0] if by_campaign["campaign"] else metrics
        actual: float | None
        if campaign.goal_metric in RATE_GOALS:
            rate = getattr(metrics, campaign.goal_metric)
            actual = None if rate is None else rate * 100
        elif campaign.goal_metric == "mql_count":
            actual = float(metrics.conversions)
        else:
            actual = metrics.revenue
        result.append(
            Goal(campaign.id, campaign.name, campaign.goal_metric, campaign.goal_target, actual, campaign.goal_days)
        )
    return result


def alerts(filters: Filters) -> list[Alert]:
    """Campaigns the portal paused on its own (alert thresholds), newest first."""
    query = select(AuditEvent).where(AuditEvent.action == "campaign.auto_paused")
    if filters.campaign_ids:
        query = query.where(AuditEvent.target.in_([f"campaign:{i}" for i in filters.campaign_ids]))
    start, end = filters.bounds()
    if start is not None:
        query = query.where(AuditEvent.created_at >= start)
    if end is not None:
        query = query.where(AuditEvent.created_at < end)
    events = list(db.session.scalars(query.order_by(AuditEvent.created_at.desc()).limit(200)))
    ids = {int(e.target.split(":", 1)[1]) for e in events if e.target.split(":", 1)[-1].isdigit()}
    names = dict(db.session.execute(select(Campaign.id, Campaign.name).where(Campaign.id.in_(ids))).all())
    result = []
    for event in events:
        raw = event.target.split(":", 1)[-1]
        campaign_id = int(raw) if raw.isdigit() else 0
        reason = str((event.details or {}).get("reason", ""))
        result.append(Alert(event.created_at, campaign_id, names.get(campaign_id, event.target), reason))
    return result


# Figures already computed, per filters, part (total, series, each dimension) and rollup
# generation: twenty managers on one dashboard cost one computation per refresh. Entries live
# no longer than the rollups' age limit, so the conversions they hold are never older either.
_computed = Recent()


def kept(
    filters: Filters, dimensions: tuple[str, ...], together: tuple[str, ...] = ()
) -> tuple[datetime, Metrics, dict[str, list[Metrics]]]:
    """(as of, total, groups) like grouped(), each part kept for the others who ask within the
    age limit (see _computed), so changing the grouping computes only the new one. Parts that
    must be computed (a first view, or kept ones past half the limit) are computed together,
    once, with those of `together` (the other groupings a page offers: one statement costs
    about what one part costs, and the next filter change then finds its part kept)."""
    as_of, generation = rollups.fresh_state()
    max_age = rollups.max_age()
    source_as_of = as_of if rollups_answer(filters) else None
    names = ("total", *dimensions)
    everything = tuple(dict.fromkeys((*names, *together)))

    def compute_together(wanted: str) -> Any:
        stale = [
            name
            for name in everything
            if name == wanted or not _computed.has_young((filters, name), generation, max_age)
        ]
        total, found = _uncosted(filters, tuple(name for name in stale if name != "total"))
        for name in stale:
            if name != wanted:
                _computed.put((filters, name), total if name == "total" else found[name], generation, source_as_of)
        return total if wanted == "total" else found[wanted]

    # Parts nobody has yet (a first view) are computed together, once: one statement, not one
    # per part, and not one per reader arriving meanwhile.
    if not all(_computed.has((filters, name), max_age) for name in names):
        with _computed.lock((filters, "first view")):
            if not all(_computed.has((filters, name), max_age) for name in names):
                _computed.put((filters, "total"), compute_together("total"), generation, source_as_of)

    parts = {
        name: _computed.get((filters, name), lambda n=name: compute_together(n), max_age, generation, source_as_of)
        for name in names
    }
    # Copies: costs are added to them, and the kept figures serve other requests.
    found = {name: copy.deepcopy(parts[name][1]) for name in dimensions}
    return min(at for at, _value in parts.values()), *_finished(copy.deepcopy(parts["total"][1]), found, filters)


def compute(filters: Filters, dimensions: tuple[str, ...] = DIMENSIONS, together: tuple[str, ...] = ()) -> Figures:
    """The figures for `filters`: totals, the groups of `dimensions` only (computed along with
    those of `together` when they must be computed, see kept()), time series, goals and
    alerts, one statement at a time on the request's own connection."""
    as_of, total, groups = kept(filters, dimensions, together)
    rollups_as_of, generation = rollups.fresh_state()
    series_as_of, series_ = _computed.get(
        (filters, "series"),
        lambda: series(filters),
        rollups.max_age(),
        generation,
        rollups_as_of if rollups_answer(filters) else None,
    )
    return Figures(
        filters=filters,
        total=total,
        groups=groups,
        series=copy.deepcopy(series_),
        goals=goals(filters, {m.key: m for m in groups.get("campaign", [])}),
        alerts=alerts(filters),
        as_of=min(as_of, series_as_of),
    )
