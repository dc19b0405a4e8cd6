"""Privacy requests (PIPL, GDPR): everything held about one person, and erasing them.

Erasure blanks the personal data everywhere, keeps the contact row as an anonymous shell so
that delivery statistics still add up, and puts keyed hashes of the email and mobile on the
suppression list so no later import or API call can bring the person back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from portal import audit
from portal.access import Permission, check_step_up
from portal.audience.models import Contact, ContactConsent, ContactEvent, ContactTag, Tag
from portal.audience.service import AudienceError, suppress
from portal.extensions import db
from portal.models_base import utcnow


def _check(actor: Any, step_up_at: datetime | None) -> None:
    if not actor.can(Permission.PRIVACY_REQUESTS):
        raise AudienceError("may_not_handle_privacy")
    check_step_up(step_up_at)


def export_person(actor: Any, contact_id: int, step_up_at: datetime | None) -> dict[str, Any]:
    _check(actor, step_up_at)
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        raise AudienceError("no_such_contact")
    data = {
        "contact": {c.name: _plain(getattr(contact, c.key)) for c in Contact.__table__.columns},
        "consent": [
            {"channel": c.channel, "status": c.status, "source": c.source, "recorded_at": _plain(c.recorded_at)}
            for c in db.session.scalars(select(ContactConsent).where(ContactConsent.contact_id == contact_id))
        ],
        "tags": list(
            db.session.scalars(
                select(Tag.name)
                .join(ContactTag, ContactTag.tag_id == Tag.id)
                .where(ContactTag.contact_id == contact_id)
            )
        ),
        "events": [
            {"kind": e.kind, "occurred_at": _plain(e.occurred_at), "properties": e.properties, "source": e.source}
            for e in db.session.scalars(
                select(ContactEvent).where(ContactEvent.contact_id == contact_id).order_by(ContactEvent.occurred_at)
            )
        ],
    }
    audit.record(actor, "privacy.exported", f"contact:{contact_id}")
    db.session.commit()
    return data


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def erase_person(actor: Any, contact_id: int, step_up_at: datetime | None) -> None:
    _check(actor, step_up_at)
    contact = db.session.get(Contact, contact_id)
    if contact is None:
        raise AudienceError("no_such_contact")
    if contact.email:
        suppress("email", contact.email, "erased")
    if contact.mobile:
        suppress("mobile", contact.mobile, "erased")
    for key in ("email", "mobile"):
        setattr(contact, key, None)
    for key in ("name", "company", "industry", "province", "city", "company_size"):
        setattr(contact, key, "")
    contact.attributes = {}
    contact.owner_id = None
    contact.unsubscribed, contact.unsubscribed_at, contact.unsubscribe_reason = True, utcnow(), "erased"
    contact.suppressed, contact.suppression_reason = True, "erased"
    # Events stay (anonymous) for the statistics; what they said about the person goes. The
    # delivery an open or click belongs to is kept: campaign figures stay right without it
    # saying anything about who the person was.
    for event in db.session.scalars(select(ContactEvent).where(ContactEvent.contact_id == contact_id)):
        delivery_id = (event.properties or {}).get("delivery_id")
        event.properties = {"delivery_id": delivery_id} if isinstance(delivery_id, int) else {}
    db.session.execute(delete(ContactTag).where(ContactTag.contact_id == contact_id))
    db.session.execute(delete(ContactConsent).where(ContactConsent.contact_id == contact_id))
    audit.record(actor, "privacy.erased", f"contact:{contact_id}")
    db.session.commit()
