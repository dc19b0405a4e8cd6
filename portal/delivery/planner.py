"""The planner: a message step's deliveries, written in one set-based INSERT ... SELECT.

Every contact whose journey stands at the step gets one ledger row: `pending` to be sent,
or `excluded` with the first reason that applies (suppressed, unsubscribed, no consent
for the channel, no address for it, over WeCom's own limits for a WeCom customer, over the
frequency cap). The unique (step, contact) with ON CONFLICT DO NOTHING makes planning
idempotent: a repeated or overlapping run adds nothing. The same exclusion rules feed the
audience preview at publish time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, not_, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import ColumnElement

from portal import settings
from portal.audience.models import ConsentStatus, Contact, ContactConsent, LifecycleStage
from portal.delivery.models import Delivery, DeliveryStatus, ExclusionReason
from portal.extensions import db

# Marketing messages that count towards the frequency cap: planned, being sent, or sent.
_COUNTED = (DeliveryStatus.PENDING, DeliveryStatus.SENDING, DeliveryStatus.SUBMITTED, DeliveryStatus.SENT)


def address_column(channel: str) -> ColumnElement:
    """The contact's address on `channel`: the email, the mobile for SMS, the WeCom customer
    id for WeCom."""
    if channel == "wecom":
        return Contact.wecom_external_userid
    return Contact.email if channel == "email" else Contact.mobile


def no_address(channel: str) -> ColumnElement:
    """True for a contact who cannot be reached on `channel`: no email or mobile; for WeCom,
    no customer id or no owning employee to send through."""
    if channel == "wecom":
        return or_(Contact.wecom_external_userid == "", Contact.wecom_owner_userid == "")
    return address_column(channel).is_(None)


def exclusion_reason(channel: str, now: datetime) -> tuple[ColumnElement, Any]:
    """(reason, recent): a SQL expression over `contacts` giving the reason a contact gets no
    message on `channel` now, or '' when it may get one, and the subquery of recent
    messages it reads, which the caller LEFT JOINs on `recent.c.contact_id == Contact.id`."""
    consented = exists().where(
        ContactConsent.contact_id == Contact.id,
        ContactConsent.channel == channel,
        ContactConsent.status == ConsentStatus.GRANTED,
    )
    recent = recent_messages(now, channel)
    whens = [
        (Contact.suppressed.is_(True), literal(ExclusionReason.SUPPRESSED.value)),
        (Contact.unsubscribed.is_(True), literal(ExclusionReason.UNSUBSCRIBED.value)),
        (not_(consented), literal(ExclusionReason.NO_CONSENT.value)),
        (no_address(channel), literal(ExclusionReason.NO_ADDRESS.value)),
    ]
    if channel == "wecom":
        whens.append((over_wecom_limit(recent), literal(ExclusionReason.WECOM_LIMIT.value)))
    whens.append((over_frequency_cap(channel, recent), literal(ExclusionReason.FREQUENCY_CAP.value)))
    return case(*whens, else_=literal("")), recent


def recent_messages(now: datetime, channel: str = "email") -> Any:
    """Per contact, the marketing messages of the last day (any channel) and of the last
    week (email), and for a WeCom step the WeCom mass messages of the last day and 30 days:
    one aggregate over the recent ledger rows, joined to the audience, rather than counting
    subqueries per contact. Only a WeCom step reads a month back."""
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    week_email = and_(Delivery.channel == "email", Delivery.due_at > week_ago)
    columns = [
        Delivery.contact_id,
        func.sum(case((Delivery.due_at > day_ago, 1), else_=0)).label("day"),
        func.sum(case((week_email, 1), else_=0)).label("week_email"),
    ]
    since = week_ago
    if channel == "wecom":
        since = now - timedelta(days=30)
        wecom = Delivery.channel == "wecom"
        columns += [
            func.sum(case((and_(wecom, Delivery.due_at > day_ago), 1), else_=0)).label("wecom_day"),
            func.sum(case((wecom, 1), else_=0)).label("wecom_month"),
        ]
    return (
        select(*columns)
        .where(Delivery.status.in_(_COUNTED), Delivery.due_at > since)
        .group_by(Delivery.contact_id)
        .subquery("recent")
    )


def over_wecom_limit(recent: Any) -> ColumnElement:
    """True for a WeCom customer who has had the mass messages WeCom lets a company send them
    in a day or in 30 days (settings wecom.max_per_customer_per_*): WeCom would refuse more."""
    per_day = int(settings.get("wecom.max_per_customer_per_day"))
    per_month = int(settings.get("wecom.max_per_customer_per_month"))
    return or_(
        func.coalesce(recent.c.wecom_day, 0) >= per_day,
        func.coalesce(recent.c.wecom_month, 0) >= per_month,
    )


def over_frequency_cap(channel: str, recent: Any) -> ColumnElement:
    """True for a contact who already has the most marketing messages allowed: per day on
    any channel, and for prospects (lifecycle stage "new") emails per week."""
    per_day = int(settings.get("sending.max_per_contact_per_day"))
    per_week = int(settings.get("sending.max_emails_per_prospect_per_week"))
    capped = func.coalesce(recent.c.day, 0) >= per_day
    if channel == "email":
        prospect = Contact.lifecycle_stage == LifecycleStage.NEW.value
        capped = or_(capped, and_(prospect, func.coalesce(recent.c.week_email, 0) >= per_week))
    return capped


def insert_ignoring_duplicates(table: Any, columns: list[Any] | None = None, rows: Any = None):
    """INSERT ... ON CONFLICT DO NOTHING in the session's dialect; with `columns` and `rows`
    (a SELECT), INSERT ... SELECT. SQLite needs a WHERE in that SELECT to parse ON CONFLICT."""
    dialect = db.session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table)
    if rows is not None:
        statement = statement.from_select(columns, rows.where(true()))
    return statement.on_conflict_do_nothing()


def plan_step(
    *,
    campaign_id: int,
    step_id: int,
    channel: str,
    content_version_id: int,
    contacts: Any,
    due_at: datetime,
    now: datetime,
    variant: str = "",
) -> None:
    """Write the ledger rows of `step_id` for the contacts selected by `contacts` (a SELECT
    of contact ids). Rows that exist already are left as they are."""
    reason, recent = exclusion_reason(channel, now)
    rows = (
        select(
            literal(campaign_id),
            literal(step_id),
            Contact.id,
            literal(channel),
            literal(content_version_id),
            literal(variant),
            case((reason == "", literal(DeliveryStatus.PENDING.value)), else_=literal(DeliveryStatus.EXCLUDED.value)),
            reason,
            literal(due_at, Delivery.due_at.type),
            literal(0),
            literal(""),
            literal(""),
            literal(now, Delivery.created_at.type),
        )
        .select_from(Contact)
        .outerjoin(recent, recent.c.contact_id == Contact.id)
        .where(Contact.id.in_(contacts))
        # Ledger ids, and so the order of sending, follow the contacts' order: deterministic.
        .order_by(Contact.id)
    )
    columns = Delivery.__table__.c
    db.session.execute(
        insert_ignoring_duplicates(
            Delivery.__table__,
            [
                columns.campaign_id,
                columns.step_id,
                columns.contact_id,
                columns.channel,
                columns.content_version_id,
                columns.variant,
                columns.status,
                columns.reason,
                columns.due_at,
                columns.attempts,
                columns.result_detail,
                columns.result_message,
                columns.created_at,
            ],
            rows,
        )
    )


def exclusion_reasons(channel: str) -> list[str]:
    """The reasons a contact may be left out of a step on `channel`."""
    return [r.value for r in ExclusionReason if r is not ExclusionReason.WECOM_LIMIT or channel == "wecom"]


def exclusion_counts(contacts: Any, channel: str, now: datetime) -> dict[str, int]:
    """How many of `contacts` (a SELECT of contact ids) would be excluded, per reason, and
    how many would enter ("entering"): the audience preview."""
    reason, recent = exclusion_reason(channel, now)
    counted = (
        select(reason.label("reason"))
        .select_from(Contact)
        .outerjoin(recent, recent.c.contact_id == Contact.id)
        .where(Contact.id.in_(contacts))
        .subquery()
    )
    rows = db.session.execute(select(counted.c.reason, func.count()).group_by(counted.c.reason)).all()
    counts = dict.fromkeys(exclusion_reasons(channel), 0)
    counts["entering"] = 0
    for value, number in rows:
        counts[value or "entering"] = number
    return counts
