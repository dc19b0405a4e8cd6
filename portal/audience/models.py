"""Contacts and what is known about them: consent per channel, behaviour events, tags,
and the suppression list that keeps erased or bounced people out of marketing sends.

Sized for millions of contacts: the columns the segment compiler filters on are indexed,
and everything the send planner needs is reachable with set-based joins."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from portal.audience.normalise import region_of
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so autoincrement works) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"
    WECOM = "wecom"


class ConsentStatus(enum.StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    # No recorded consent: excluded from marketing sends.
    NONE = "none"


class LifecycleStage(enum.StrEnum):
    NEW = "new"
    GROWING = "growing"
    STABLE = "stable"
    DORMANT = "dormant"


class EventKind(enum.StrEnum):
    PAGE_VIEW = "page_view"
    FORM_SUBMIT = "form_submit"
    DOWNLOAD = "download"
    WEBINAR_ATTENDED = "webinar_attended"
    SALES_CONSULTATION = "sales_consultation"
    PURCHASE = "purchase"
    # Offline activities people log on the contact page.
    TRADE_SHOW = "trade_show"
    PHONE_CALL = "phone_call"
    # Written by the portal itself (tracking, scoring, lifecycle, consent).
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    MQL = "mql"
    STAGE_CHANGE = "stage_change"
    IMPORTED = "imported"
    CONSENT_CHANGE = "consent_change"
    NOTE = "note"


class Contact(db.Model):
    __tablename__ = "contacts"
    __table_args__ = (
        Index("ix_contacts_province_city", "province", "city"),
        Index("ix_contacts_industry", "industry"),
        Index("ix_contacts_lifecycle_stage", "lifecycle_stage"),
        Index("ix_contacts_score", "score"),
        Index("ix_contacts_last_activity_at", "last_activity_at"),
        Index("ix_contacts_owner_id", "owner_id"),
        Index("ix_contacts_region", "region"),
        Index("ix_contacts_wecom_external_userid", "wecom_external_userid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Lower-cased; unique where present. A contact has an email, a mobile, or both.
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    # E.164 (+8613800138000); unique where present.
    mobile: Mapped[str | None] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    company: Mapped[str] = mapped_column(String(200), default="")
    industry: Mapped[str] = mapped_column(String(100), default="")
    # Normalised: 上海 and 上海市 are both stored as 上海市.
    province: Mapped[str] = mapped_column(String(50), default="")
    city: Mapped[str] = mapped_column(String(50), default="")
    # The 大区 (华东, 华北, …, 港澳台/海外) of the province, derived on every write (see below).
    region: Mapped[str] = mapped_column(String(16), default="")
    company_size: Mapped[str] = mapped_column(String(32), default="")
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # WeCom customer contact: the customer's external_userid and the userid of the employee
    # who has them as a contact (mass messages go out through that employee); "" = none.
    wecom_external_userid: Mapped[str] = mapped_column(String(64), default="")
    wecom_owner_userid: Mapped[str] = mapped_column(String(64), default="")
    score: Mapped[int] = mapped_column(Integer, default=60)
    lifecycle_stage: Mapped[str] = mapped_column(String(16), default=LifecycleStage.NEW)
    unsubscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribe_reason: Mapped[str] = mapped_column(String(200), default="")
    suppressed: Mapped[bool] = mapped_column(Boolean, default=False)
    suppression_reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


@event.listens_for(Contact, "before_insert")
@event.listens_for(Contact, "before_update")
def _derive_region(_mapper, _connection, contact: Contact) -> None:
    """Every write through the ORM keeps the region in step with the province (the import's
    set-based statements compute it themselves)."""
    contact.region = region_of(contact.province)


class ContactConsent(db.Model):
    """The current consent of one contact for one channel, with its evidence."""

    __tablename__ = "contact_consents"

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=ConsentStatus.NONE)
    source: Mapped[str] = mapped_column(String(200), default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContactEvent(db.Model):
    """Something a contact did (or that happened to them): the timeline and the input of
    tag rules, scoring, lifecycle stages and segment behaviour conditions."""

    __tablename__ = "contact_events"
    __table_args__ = (
        Index("ix_contact_events_contact_time", "contact_id", "occurred_at"),
        Index("ix_contact_events_kind_time", "kind", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # api:<integration>, import, tracking, system, user:<id>
    source: Mapped[str] = mapped_column(String(64), default="")


class Tag(db.Model):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContactTag(db.Model):
    __tablename__ = "contact_tags"
    __table_args__ = (Index("ix_contact_tags_tag_id", "tag_id"),)

    contact_id: Mapped[int] = mapped_column(BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    # manual, import, rule:<id>, scoring
    source: Mapped[str] = mapped_column(String(64), default="manual")
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Suppression(db.Model):
    """Addresses that must never receive marketing again (erased people, hard bounces,
    complaints), kept as keyed hashes so that no personal data stays behind."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("kind", "value_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # email | mobile
    value_hash: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 hex
    reason: Mapped[str] = mapped_column(String(64))  # erased | hard_bounce | complaint | manual
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportJob(db.Model):
    """One upload of a contact file: its column mapping, choices, and the outcome."""

    __tablename__ = "audience_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    original_name: Mapped[str] = mapped_column(String(255))
    stored_name: Mapped[str] = mapped_column(String(255))  # under STORAGE_DIR/imports/
    encoding: Mapped[str] = mapped_column(String(32), default="")
    # column index (as text) -> field name ("email", "attr:职位", ...) ; unmapped columns are left out
    mapping: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    merge_policy: Mapped[str] = mapped_column(String(16), default="fill")  # fill | overwrite
    default_consent: Mapped[str] = mapped_column(String(16), default="none")
    status: Mapped[str] = mapped_column(String(16), default="uploaded")  # uploaded | queued | running | done | failed
    job_run_id: Mapped[int | None] = mapped_column(ForeignKey("job_runs.id", ondelete="SET NULL"))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    # Rows adding to a person an earlier row of the same file reached.
    merged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    blank: Mapped[int] = mapped_column(Integer, default=0)
    # Why a failed import stopped: a code the page turns into a sentence (never an error text).
    failure: Mapped[str] = mapped_column(String(32), default="")
    failure_row: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(db.Model):
    """A per-integration token for the events API; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Segment(db.Model):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # {"op": "and"|"or", "items": [condition | group, ...]} — see portal.audience.segments
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TagRule(db.Model):
    """Tag every contact matching `rules` (same language as segments); untag those who stop matching."""

    __tablename__ = "tag_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"))
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ScoringRule(db.Model):
    """Points a behaviour event earns, optionally only when a property contains a text
    (e.g. an email click whose url contains "pricing")."""

    __tablename__ = "scoring_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    event_kind: Mapped[str] = mapped_column(String(32))
    property_name: Mapped[str] = mapped_column(String(64), default="")
    property_contains: Mapped[str] = mapped_column(String(200), default="")
    points: Mapped[int] = mapped_column(Integer)


class ScoredEvent(db.Model):
    """Which events have been scored, so that scoring an event twice changes nothing."""

    __tablename__ = "scored_events"

    event_id: Mapped[int] = mapped_column(BigId, ForeignKey("contact_events.id", ondelete="CASCADE"), primary_key=True)
    points: Mapped[int] = mapped_column(Integer)
