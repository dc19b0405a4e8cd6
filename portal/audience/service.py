"""Contacts: creating and cleaning them, consent, behaviour events, tags, and reading them."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import delete, or_, select

from portal import audit
from portal.audience import normalise
from portal.audience.models import (
    Channel,
    ConsentStatus,
    Contact,
    ContactConsent,
    ContactEvent,
    ContactTag,
    EventKind,
    Suppression,
    Tag,
)
from portal.extensions import db
from portal.models_base import utcnow
from portal.paging import Page, paginate

# Events an integration may send through the API; the rest are written by the portal.
API_EVENT_KINDS = (
    EventKind.PAGE_VIEW,
    EventKind.FORM_SUBMIT,
    EventKind.DOWNLOAD,
    EventKind.WEBINAR_ATTENDED,
    EventKind.SALES_CONSULTATION,
    EventKind.PURCHASE,
)
EDITABLE_FIELDS = ("name", "company", "industry", "province", "city", "company_size")


class AudienceError(ValueError):
    """A refused audience change; the message says why."""


def suppression_hash(kind: str, value: str) -> str:
    """Keyed hash of a normalised email or mobile: stays on the suppression list after the
    person's data is erased, without keeping the data itself."""
    return hmac.digest(current_app.config["SECRET_KEY"].encode(), f"{kind}:{value}".encode(), hashlib.sha256).hex()


def is_suppressed(email: str | None, mobile: str | None) -> bool:
    hashes = [
        ("email", suppression_hash("email", email)) if email else None,
        ("mobile", suppression_hash("mobile", mobile)) if mobile else None,
    ]
    hashes = [h for h in hashes if h]
    if not hashes:
        return False
    return (
        db.session.scalar(
            select(Suppression.id)
            .where(or_(*[(Suppression.kind == k) & (Suppression.value_hash == h) for k, h in hashes]))
            .limit(1)
        )
        is not None
    )


def suppress(kind: str, value: str, reason: str) -> None:
    digest = suppression_hash(kind, value)
    if not db.session.scalar(select(Suppression.id).where(Suppression.kind == kind, Suppression.value_hash == digest)):
        db.session.add(Suppression(kind=kind, value_hash=digest, reason=reason))


def clean_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Normalised contact fields from raw input; raises normalise.InvalidValue."""
    cleaned: dict[str, Any] = {}
    if "email" in values:
        cleaned["email"] = normalise.email(values.get("email"))
    if "mobile" in values:
        cleaned["mobile"] = normalise.mobile(values.get("mobile"))
    for key in EDITABLE_FIELDS:
        if key in values:
            cleaned[key] = str(values.get(key) or "").strip()
    if "province" in cleaned:
        cleaned["province"] = normalise.province(cleaned["province"])
    if "city" in cleaned:
        cleaned["city"] = normalise.city(cleaned["city"], cleaned.get("province", ""))
    return cleaned


def create_contact(
    actor: Any, values: dict[str, Any], consent: dict[str, str] | None = None, source: str = "manual"
) -> Contact:
    try:
        cleaned = clean_fields(values)
    except normalise.InvalidValue as exc:
        raise AudienceError(str(exc)) from exc
    if not cleaned.get("email") and not cleaned.get("mobile"):
        raise AudienceError("A contact needs an email address or a mobile number.")
    if is_suppressed(cleaned.get("email"), cleaned.get("mobile")):
        raise AudienceError("This person asked to be forgotten or is suppressed; they cannot be added again.")
    duplicate = find_contact(cleaned.get("email"), cleaned.get("mobile"))
    if duplicate is not None:
        raise AudienceError(f"A contact with this email or mobile exists already (#{duplicate.id}).")
    from portal import settings

    contact = Contact(
        **cleaned,
        attributes=values.get("attributes") or {},
        score=settings.get("scoring.base_score"),
        owner_id=values.get("owner_id"),
    )
    db.session.add(contact)
    db.session.flush()
    for channel, status in (consent or {}).items():
        set_consent(contact.id, channel, status, source)
    audit.record(actor, "contact.created", f"contact:{contact.id}", {"source": source})
    db.session.commit()
    return contact


def find_contact(email: str | None, mobile: str | None) -> Contact | None:
    """By email first, then by mobile."""
    if email:
        found = db.session.scalar(select(Contact).where(Contact.email == email))
        if found:
            return found
    if mobile:
        return db.session.scalar(select(Contact).where(Contact.mobile == mobile))
    return None


def set_consent(contact_id: int, channel: str, status: str, source: str) -> None:
    """Record consent for one channel (in the caller's transaction)."""
    if channel not in set(Channel) or status not in set(ConsentStatus):
        raise AudienceError(f"bad consent {channel}={status}")
    row = db.session.get(ContactConsent, (contact_id, channel))
    if row is None:
        db.session.add(ContactConsent(contact_id=contact_id, channel=channel, status=status, source=source))
    elif row.status != status:
        row.status, row.source, row.recorded_at = status, source, utcnow()


def record_event(
    contact_id: int,
    kind: str,
    occurred_at: datetime | None = None,
    properties: dict[str, Any] | None = None,
    source: str = "system",
) -> int:
    """Store a behaviour event, touch the contact's last activity, then tell the listeners."""
    if kind not in set(EventKind):
        raise AudienceError(f"unknown event kind '{kind}'")
    when = occurred_at or utcnow()
    event = ContactEvent(contact_id=contact_id, kind=kind, occurred_at=when, properties=properties or {}, source=source)
    db.session.add(event)
    contact = db.session.get(Contact, contact_id)
    if kind not in (EventKind.MQL, EventKind.STAGE_CHANGE, EventKind.IMPORTED) and (
        contact.last_activity_at is None or contact.last_activity_at < when
    ):
        contact.last_activity_at = when
    db.session.commit()
    from portal.audience import scoring, tag_rules

    scoring.score_event(event.id)
    tag_rules.schedule_evaluation()
    return event.id


def tag_by_name(name: str) -> Tag:
    name = name.strip()
    tag = db.session.scalar(select(Tag).where(Tag.name == name))
    if tag is None:
        tag = Tag(name=name)
        db.session.add(tag)
        db.session.flush()
    return tag


def add_tag(actor: Any, contact_id: int, name: str, source: str = "manual") -> None:
    tag = tag_by_name(name)
    if db.session.get(ContactTag, (contact_id, tag.id)) is None:
        db.session.add(ContactTag(contact_id=contact_id, tag_id=tag.id, source=source))
        audit.record(actor, "contact.tagged", f"contact:{contact_id}", {"tag": tag.name})
    db.session.commit()


def remove_tag(actor: Any, contact_id: int, tag_id: int) -> None:
    db.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id, ContactTag.tag_id == tag_id))
    audit.record(actor, "contact.untagged", f"contact:{contact_id}", {"tag_id": tag_id})
    db.session.commit()


def update_contact(actor: Any, contact_id: int, values: dict[str, Any]) -> Contact:
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        raise AudienceError("No such contact.")
    try:
        cleaned = clean_fields({k: v for k, v in values.items() if k in EDITABLE_FIELDS})
    except normalise.InvalidValue as exc:
        raise AudienceError(str(exc)) from exc
    changes = {k: v for k, v in cleaned.items() if getattr(contact, k) != v}
    for key, value in changes.items():
        setattr(contact, key, value)
    if changes:
        audit.record(actor, "contact.updated", f"contact:{contact.id}", {"fields": sorted(changes)})
    db.session.commit()
    return contact


# --- reading ---------------------------------------------------------------------------------


def search_contacts(
    text: str = "",
    province_name: str = "",
    industry: str = "",
    stage: str = "",
    tag: str = "",
    page: int = 1,
    per_page: int = 25,
) -> Page:
    query = select(Contact).order_by(Contact.id.desc())
    if text:
        like = f"%{text.strip()}%"
        query = query.where(
            or_(
                Contact.name.ilike(like),
                Contact.email.ilike(like),
                Contact.mobile.ilike(like),
                Contact.company.ilike(like),
            )
        )
    if province_name:
        query = query.where(Contact.province == normalise.province(province_name))
    if industry:
        query = query.where(Contact.industry == industry)
    if stage:
        query = query.where(Contact.lifecycle_stage == stage)
    if tag:
        query = query.where(
            Contact.id.in_(select(ContactTag.contact_id).join(Tag, Tag.id == ContactTag.tag_id).where(Tag.name == tag))
        )
    return paginate(query, page, per_page)


def contact_profile(contact_id: int) -> dict[str, Any]:
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        raise AudienceError("No such contact.")
    tags = list(
        db.session.execute(
            select(Tag, ContactTag.source, ContactTag.added_at)
            .join(ContactTag, ContactTag.tag_id == Tag.id)
            .where(ContactTag.contact_id == contact_id)
            .order_by(Tag.name)
        )
    )
    consents = {
        c.channel: c for c in db.session.scalars(select(ContactConsent).where(ContactConsent.contact_id == contact_id))
    }
    events = list(
        db.session.scalars(
            select(ContactEvent)
            .where(ContactEvent.contact_id == contact_id)
            .order_by(ContactEvent.occurred_at.desc(), ContactEvent.id.desc())
            .limit(200)
        )
    )
    return {"contact": contact, "tags": tags, "consents": consents, "events": events}


def all_tags() -> list[Tag]:
    return list(db.session.scalars(select(Tag).order_by(Tag.name)))
