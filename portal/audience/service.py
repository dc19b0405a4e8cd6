"""Contacts: creating and cleaning them, consent, behaviour events, tags, and reading them."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import delete, func, insert, literal, or_, select

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
from portal.refusals import Refusal

# Events an integration may send through the API; the rest are written by the portal.
API_EVENT_KINDS = (
    EventKind.PAGE_VIEW,
    EventKind.FORM_SUBMIT,
    EventKind.DOWNLOAD,
    EventKind.WEBINAR_ATTENDED,
    EventKind.SALES_CONSULTATION,
    EventKind.PURCHASE,
)
# Events that say what the portal noted, not what the person did: no "last activity".
PORTAL_BOOKKEEPING_KINDS = (
    EventKind.MQL,
    EventKind.STAGE_CHANGE,
    EventKind.IMPORTED,
    EventKind.CONSENT_CHANGE,
    EventKind.NOTE,
)
# Activities a person logs by hand; scoring rules may count them like any other event.
OFFLINE_ACTIVITY_KINDS = (EventKind.TRADE_SHOW, EventKind.PHONE_CALL, EventKind.SALES_CONSULTATION)
# Above this many contacts, bulk actions need AUDIENCE_BULK_EDIT / _EXPORT and a recent second factor.
BULK_LIMIT = 1000
EDITABLE_FIELDS = ("name", "company", "industry", "province", "city", "company_size")


class AudienceError(Refusal, ValueError):
    """A refused audience change: a code and parameters, made a sentence when shown."""

    messages = {
        "no_such_contact": _l("No such contact."),
        "no_such_tag": _l("No such tag."),
        "no_such_rule": _l("No such tag rule."),
        "no_such_segment": _l("No such segment."),
        "segment_in_use": _l("%(count)s campaigns use this segment: change their audience first."),
        "no_such_user": _l("No such user."),
        "may_not_handle_privacy": _l("You may not handle privacy requests."),
        "token_name_empty": _l("Name the integration."),
        "attribute_name_too_long": _l("The field name “%(name)s” is longer than %(limit)s characters."),
        "attribute_value_too_long": _l("The value of “%(name)s” is longer than %(limit)s characters."),
        "attribute_twice": _l("The field “%(name)s” is named twice."),
        "no_such_token": _l("No such active token."),
        "needs_address": _l("A contact needs an email address or a mobile number."),
        "suppressed": _l("This person asked to be forgotten or is suppressed; they cannot be added again."),
        "duplicate_contact": _l("A contact with this email or mobile exists already (#%(id)s)."),
        "invalid_email": _l("“%(value)s” is not a valid email address."),
        "invalid_mobile": _l("“%(value)s” is not a valid mobile number."),
        "bad_consent": _l("Choose a channel and a consent state."),
        "unknown_event_kind": _l("Unknown kind of activity."),
        "note_empty": _l("Write the note first."),
        "tag_name_empty": _l("Give the tag a name."),
        "tag_name_taken": _l("A tag named “%(name)s” exists already."),
        "merge_into_itself": _l("Choose another tag to merge into."),
        "nothing_selected": _l("Select some contacts first."),
        "bulk_needs_permission": _l(
            "Changing or exporting more than %(limit)s contacts at once needs the permission to change many contacts."
        ),
    }


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


def _cleaned(values: dict[str, Any]) -> dict[str, Any]:
    """clean_fields, with a refusal that names the field and the value people typed."""
    for key, check in (("email", normalise.email), ("mobile", normalise.mobile)):
        try:
            check(values.get(key))
        except normalise.InvalidValue as exc:
            raise AudienceError(f"invalid_{key}", value=values.get(key)) from exc
    return clean_fields(values)


def create_contact(
    actor: Any, values: dict[str, Any], consent: dict[str, str] | None = None, source: str = "manual"
) -> Contact:
    cleaned = _cleaned(values)
    if not cleaned.get("email") and not cleaned.get("mobile"):
        raise AudienceError("needs_address")
    if is_suppressed(cleaned.get("email"), cleaned.get("mobile")):
        raise AudienceError("suppressed")
    duplicate = find_contact(cleaned.get("email"), cleaned.get("mobile"))
    if duplicate is not None:
        raise AudienceError("duplicate_contact", id=duplicate.id)
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


def set_consent(contact_id: int, channel: str, status: str, source: str) -> bool:
    """Record consent for one channel (in the caller's transaction); returns whether it changed.

    Every change is also a `consent_change` event, so the contact's timeline keeps the history
    (the consent row holds only the current state and its evidence)."""
    if channel not in set(Channel) or status not in set(ConsentStatus):
        raise AudienceError("bad_consent")
    row = db.session.get(ContactConsent, (contact_id, channel))
    before = row.status if row is not None else ConsentStatus.NONE
    if row is None:
        db.session.add(ContactConsent(contact_id=contact_id, channel=channel, status=status, source=source))
    elif row.status != status:
        row.status, row.source, row.recorded_at = status, source, utcnow()
    else:
        return False
    db.session.add(
        ContactEvent(
            contact_id=contact_id,
            kind=EventKind.CONSENT_CHANGE,
            properties={"channel": channel, "from": str(before), "to": status},
            source=source,
        )
    )
    return True


def record_event(
    contact_id: int,
    kind: str,
    occurred_at: datetime | None = None,
    properties: dict[str, Any] | None = None,
    source: str = "system",
) -> int:
    """Store a behaviour event, touch the contact's last activity, then tell the listeners."""
    if kind not in set(EventKind):
        raise AudienceError("unknown_event_kind")
    when = occurred_at or utcnow()
    event = ContactEvent(contact_id=contact_id, kind=kind, occurred_at=when, properties=properties or {}, source=source)
    db.session.add(event)
    contact = db.session.get(Contact, contact_id)
    if kind not in PORTAL_BOOKKEEPING_KINDS and (contact.last_activity_at is None or contact.last_activity_at < when):
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


def _contact(contact_id: int) -> Contact:
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        raise AudienceError("no_such_contact")
    return contact


def update_contact(
    actor: Any, contact_id: int, values: dict[str, Any], attributes: list[tuple[str, str]] | None = None
) -> Contact:
    """Change a contact's fields (email and mobile included: still unique, still not suppressed)
    and, when `attributes` is given, its custom fields: the (name, value) pairs replace them, a
    pair with an empty name or value removes that field."""
    contact = _contact(contact_id)
    cleaned = _cleaned({k: v for k, v in values.items() if k in ("email", "mobile", *EDITABLE_FIELDS)})
    changes = {k: v for k, v in cleaned.items() if getattr(contact, k) != v}
    attribute_changes: list[str] = []
    if attributes is not None:
        before = dict(contact.attributes or {})
        after = _cleaned_attributes(attributes, before)
        attribute_changes = sorted(
            f"attr:{name}" for name in before.keys() | after.keys() if before.get(name) != after.get(name)
        )
        if attribute_changes:
            contact.attributes = after
    if "email" in changes or "mobile" in changes:
        email, mobile = cleaned.get("email", contact.email), cleaned.get("mobile", contact.mobile)
        if not email and not mobile:
            raise AudienceError("needs_address")
        for value, column in ((changes.get("email"), Contact.email), (changes.get("mobile"), Contact.mobile)):
            other = (
                db.session.scalar(select(Contact.id).where(column == value, Contact.id != contact.id))
                if value
                else None
            )
            if other is not None:
                raise AudienceError("duplicate_contact", id=other)
        if is_suppressed(changes.get("email"), changes.get("mobile")):
            raise AudienceError("suppressed")
    for key, value in changes.items():
        setattr(contact, key, value)
    if changes or attribute_changes:
        audit.record(actor, "contact.updated", f"contact:{contact.id}", {"fields": sorted(changes) + attribute_changes})
    db.session.commit()
    return contact


ATTRIBUTE_NAME_MAX, ATTRIBUTE_VALUE_MAX = 64, 1000


def _cleaned_attributes(pairs: list[tuple[str, str]], before: dict[str, Any]) -> dict[str, Any]:
    after: dict[str, Any] = {}
    for raw_name, raw_value in pairs:
        name, value = (raw_name or "").strip(), (raw_value or "").strip()
        if not name or not value:
            continue
        if len(name) > ATTRIBUTE_NAME_MAX:
            raise AudienceError("attribute_name_too_long", name=name[:20] + "…", limit=ATTRIBUTE_NAME_MAX)
        if len(value) > ATTRIBUTE_VALUE_MAX:
            raise AudienceError("attribute_value_too_long", name=name, limit=ATTRIBUTE_VALUE_MAX)
        if name in after:
            raise AudienceError("attribute_twice", name=name)
        # An imported number stays a number while nobody changes it.
        after[name] = before[name] if name in before and str(before[name]) == value else value
    return after


def change_consent(actor: Any, contact_id: int, channel: str, status: str) -> bool:
    """Consent changed by a person on the contact page: recorded as manual, by whom, when."""
    _contact(contact_id)
    before = db.session.get(ContactConsent, (contact_id, channel))
    before_status = before.status if before is not None else ConsentStatus.NONE
    changed = set_consent(contact_id, channel, status, f"manual:{getattr(actor, 'email', '')}")
    if changed:
        audit.record(
            actor,
            "contact.consent_changed",
            f"contact:{contact_id}",
            {"channel": channel, "before": str(before_status), "after": status},
        )
    db.session.commit()
    return changed


def change_owner(actor: Any, contact_id: int, owner_id: int | None) -> None:
    from portal.auth.models import User

    contact = _contact(contact_id)
    if owner_id is not None and db.session.get(User, owner_id) is None:
        raise AudienceError("no_such_user")
    if contact.owner_id == owner_id:
        return
    names = {
        user.id: user.email
        for user in db.session.scalars(select(User).where(User.id.in_([contact.owner_id, owner_id])))
    }
    audit.record(
        actor,
        "contact.owner_changed",
        f"contact:{contact.id}",
        {"before": names.get(contact.owner_id, ""), "after": names.get(owner_id, "")},
    )
    contact.owner_id = owner_id
    db.session.commit()


def add_note(actor: Any, contact_id: int, text: str) -> int:
    """A note on the contact's timeline, signed by its writer."""
    _contact(contact_id)
    text = (text or "").strip()
    if not text:
        raise AudienceError("note_empty")
    event_id = record_event(contact_id, EventKind.NOTE, properties={"text": text[:2000]}, source=_by(actor))
    audit.record(actor, "contact.note_added", f"contact:{contact_id}", {})
    db.session.commit()
    return event_id


def log_activity(actor: Any, contact_id: int, kind: str, occurred_at: datetime | None = None, note: str = "") -> int:
    """An offline activity (a trade show visit, a call): an event that scoring rules count."""
    _contact(contact_id)
    if kind not in OFFLINE_ACTIVITY_KINDS:
        raise AudienceError("unknown_event_kind")
    properties = {"text": note.strip()[:2000]} if note and note.strip() else {}
    event_id = record_event(contact_id, kind, occurred_at, properties, source=_by(actor))
    audit.record(actor, "contact.activity_logged", f"contact:{contact_id}", {"kind": kind})
    db.session.commit()
    return event_id


def _by(actor: Any) -> str:
    return f"user:{getattr(actor, 'email', '') or getattr(actor, 'id', '')}"


def add_tag(actor: Any, contact_id: int, name: str, source: str = "manual") -> None:
    name = (name or "").strip()
    if not name:
        raise AudienceError("tag_name_empty")
    tag = tag_by_name(name)
    if db.session.get(ContactTag, (contact_id, tag.id)) is None:
        db.session.add(ContactTag(contact_id=contact_id, tag_id=tag.id, source=source))
        audit.record(actor, "contact.tagged", f"contact:{contact_id}", {"tag": tag.name})
    db.session.commit()


def remove_tag(actor: Any, contact_id: int, tag_id: int) -> None:
    tag = db.session.get(Tag, tag_id)
    if tag is None:
        raise AudienceError("no_such_tag")
    db.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id, ContactTag.tag_id == tag_id))
    audit.record(actor, "contact.untagged", f"contact:{contact_id}", {"tag": tag.name})
    db.session.commit()


# --- the contact list: filters, sorting, bulk actions ----------------------------------------

SORTABLE = {
    "name": Contact.name,
    "email": Contact.email,
    "company": Contact.company,
    "province": Contact.province,
    "score": Contact.score,
    "stage": Contact.lifecycle_stage,
    "created": Contact.created_at,
    "activity": Contact.last_activity_at,
}


@dataclass
class ContactFilter:
    text: str = ""
    province: str = ""
    industry: str = ""
    stage: str = ""
    tag: str = ""
    segment_id: int | None = None
    consent: str = ""  # "<channel>:<status>", e.g. "email:granted"
    sort: str = ""  # a SORTABLE key, "-" in front for descending


def contact_query(filters: ContactFilter):
    """`select(Contact)` of the contacts the list shows, filtered and sorted."""
    from portal.audience import segments

    query = select(Contact)
    if filters.text:
        like = f"%{filters.text.strip()}%"
        query = query.where(
            or_(
                Contact.name.ilike(like),
                Contact.email.ilike(like),
                Contact.mobile.ilike(like),
                Contact.company.ilike(like),
            )
        )
    if filters.province:
        query = query.where(Contact.province == normalise.province(filters.province))
    if filters.industry:
        query = query.where(Contact.industry == filters.industry)
    if filters.stage:
        query = query.where(Contact.lifecycle_stage == filters.stage)
    if filters.tag:
        query = query.where(
            Contact.id.in_(
                select(ContactTag.contact_id).join(Tag, Tag.id == ContactTag.tag_id).where(Tag.name == filters.tag)
            )
        )
    if filters.segment_id:
        query = query.where(Contact.id.in_(segments.segment_query(filters.segment_id)))
    if filters.consent:
        channel, _sep, status = filters.consent.partition(":")
        query = query.where(
            Contact.id.in_(segments.compile_rules({"items": [{"field": f"consent.{channel}", "value": status}]}))
        )
    key = filters.sort.lstrip("-")
    column = SORTABLE.get(key)
    if column is None:
        return query.order_by(Contact.id.desc())
    ordered = column.desc() if filters.sort.startswith("-") else column.asc()
    return query.order_by(ordered, Contact.id.desc())


def search_contacts(filters: ContactFilter, page: int = 1, per_page: int = 25) -> Page:
    return paginate(contact_query(filters), page, per_page)


def selected_ids(filters: ContactFilter, ids: list[int] | None) -> Any:
    """The ids a bulk action works on: the ticked ones, or every contact the filters match."""
    if ids:
        return select(Contact.id).where(Contact.id.in_(ids))
    return contact_query(filters).with_only_columns(Contact.id).order_by(None)


def _check_bulk(actor: Any, count: int, permission: Any, step_up_at: datetime | None) -> None:
    from portal.access import check_step_up

    if count == 0:
        raise AudienceError("nothing_selected")
    if count > BULK_LIMIT:
        if not actor.can(permission):
            raise AudienceError("bulk_needs_permission", limit=BULK_LIMIT)
        check_step_up(step_up_at)


def count_selected(selection: Any) -> int:
    return db.session.scalar(select(func.count()).select_from(selection.subquery())) or 0


def bulk_tag(actor: Any, selection: Any, tag_name: str, add: bool, step_up_at: datetime | None = None) -> int:
    """Tag (or untag) every selected contact in one statement; returns how many changed.

    Above BULK_LIMIT contacts the actor needs AUDIENCE_BULK_EDIT and a recent second factor."""
    from portal.access import Permission

    count = count_selected(selection)
    _check_bulk(actor, count, Permission.AUDIENCE_BULK_EDIT, step_up_at)
    tag_name = (tag_name or "").strip()
    if not tag_name:
        raise AudienceError("tag_name_empty")
    if add:
        tag = tag_by_name(tag_name)
        already = select(ContactTag.contact_id).where(ContactTag.tag_id == tag.id)
        ids = selection.subquery()
        changed = len(
            db.session.execute(
                insert(ContactTag)
                .from_select(
                    ["contact_id", "tag_id", "source", "added_at"],
                    select(
                        ids.c.id,
                        literal(tag.id),
                        literal("manual"),
                        literal(utcnow(), ContactTag.added_at.type),
                    ).where(ids.c.id.not_in(already)),
                )
                .returning(ContactTag.contact_id)
            ).all()
        )
    else:
        tag = db.session.scalar(select(Tag).where(Tag.name == tag_name))
        if tag is None:
            raise AudienceError("no_such_tag")
        changed = (
            db.session.execute(
                delete(ContactTag).where(ContactTag.tag_id == tag.id, ContactTag.contact_id.in_(selection))
            ).rowcount
            or 0
        )
    audit.record(
        actor,
        "contacts.bulk_tagged" if add else "contacts.bulk_untagged",
        f"tag:{tag.id}",
        {"tag": tag.name, "count": changed},
    )
    db.session.commit()
    return changed


EXPORT_COLUMNS = (
    "id",
    "name",
    "email",
    "mobile",
    "company",
    "industry",
    "province",
    "city",
    "score",
    "lifecycle_stage",
)


def export_selection(actor: Any, selection: Any, step_up_at: datetime | None = None):
    """Check and audit an export of the selected contacts; returns an iterator of rows to stream.

    Above BULK_LIMIT contacts the actor needs AUDIENCE_BULK_EXPORT and a recent second factor."""
    from portal.access import Permission

    count = count_selected(selection)
    _check_bulk(actor, count, Permission.AUDIENCE_BULK_EXPORT, step_up_at)
    audit.record(actor, "contacts.exported", "contacts", {"count": count})
    db.session.commit()
    query = select(*(getattr(Contact, c) for c in EXPORT_COLUMNS)).where(Contact.id.in_(selection))

    def rows():
        # Run while the response streams: a server-side cursor lives only in its transaction.
        yield from db.session.execute(query.order_by(Contact.id).execution_options(yield_per=1000))

    return rows()


# --- the 360° view ---------------------------------------------------------------------------


def contact_profile(contact_id: int) -> dict[str, Any]:
    """Everything the contact page shows: fields, consent and its history, tags, sends with
    what the person did with them, score changes with their reasons, the timeline."""
    from portal.audience.models import ScoredEvent, ScoringRule
    from portal.auth.models import User

    contact = _contact(contact_id)
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
    scored = list(
        db.session.execute(
            select(ContactEvent, ScoredEvent.points)
            .join(ScoredEvent, ScoredEvent.event_id == ContactEvent.id)
            .where(ContactEvent.contact_id == contact_id, ScoredEvent.points != 0)
            .order_by(ContactEvent.occurred_at.desc(), ContactEvent.id.desc())
            .limit(100)
        )
    )
    rules = list(db.session.scalars(select(ScoringRule)))
    from portal.audience.scoring import points_for

    score_changes = [
        {"event": event, "points": points, "rules": [r for r in rules if points_for(event, [r])]}
        for event, points in scored
    ]
    owner = db.session.get(User, contact.owner_id) if contact.owner_id else None
    return {
        "contact": contact,
        "owner": owner,
        "tags": tags,
        "consents": consents,
        "consent_history": [e for e in events if e.kind == EventKind.CONSENT_CHANGE],
        "stage_history": [e for e in events if e.kind == EventKind.STAGE_CHANGE],
        "notes": [e for e in events if e.kind in (EventKind.NOTE, *OFFLINE_ACTIVITY_KINDS)],
        "events": events,
        "score_changes": score_changes,
        "sends": contact_sends(contact_id),
    }


def contact_sends(contact_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The messages sent to a contact: campaign, step, subject, and the opens and clicks."""
    from portal.campaigns.models import Campaign
    from portal.content.models import AssetVersion
    from portal.delivery.models import Delivery

    rows = db.session.execute(
        select(Delivery, Campaign.name, AssetVersion)
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .join(AssetVersion, AssetVersion.id == Delivery.content_version_id)
        .where(Delivery.contact_id == contact_id)
        .order_by(Delivery.due_at.desc(), Delivery.id.desc())
        .limit(limit)
    ).all()
    delivery_ids = [d.id for d, _name, _v in rows]
    clicks: dict[int, list[str]] = {}
    if delivery_ids:
        for event in db.session.scalars(
            select(ContactEvent).where(
                ContactEvent.contact_id == contact_id, ContactEvent.kind == EventKind.EMAIL_CLICK
            )
        ):
            delivery_id = (event.properties or {}).get("delivery_id")
            if delivery_id in delivery_ids:
                clicks.setdefault(delivery_id, []).append(str(event.properties.get("url", "")))
    return [
        {
            "delivery": delivery,
            "campaign": name,
            "subject": getattr(version, "subject", "") or version.asset.name,
            "links": sorted(set(clicks.get(delivery.id, []))),
        }
        for delivery, name, version in rows
    ]


def all_tags() -> list[Tag]:
    return list(db.session.scalars(select(Tag).order_by(Tag.name)))
