"""What the tracking endpoints record: opens, clicks and unsubscribes.

Each open or click is an event in `contact_events` (a contact erased since the send simply
records nothing) plus, the first time only, the open/click time on the delivery's ledger row.
The endpoints hand them to the intake (portal/delivery/intake.py: a Redis stream written to the
database in batches, so that a pixel costs one Redis round trip); when Redis cannot take one,
it is written here at once.

Unsubscribing is idempotent: the first request sets `unsubscribed`, records an
`unsubscribe` event and an audit entry; later ones change nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, String, literal, select, update
from sqlalchemy import insert as sql_insert

from portal import audit
from portal.audience.models import BigId, Contact, ContactEvent, EventKind
from portal.delivery import intake
from portal.delivery.models import Delivery, DeliveryStatus, ExclusionReason
from portal.delivery.tokens import Recipient, UnsubscribeTarget
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

SOURCE = intake.SOURCE


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


def record_now(recipient: Recipient, kind: str, url: str = "") -> None:
    """Write an open or a click (with its `url`) at once: for when the intake cannot take it."""
    properties: dict[str, Any] = {"delivery_id": recipient.delivery_id}
    if kind == EventKind.EMAIL_CLICK:
        properties["url"] = url
    now = utcnow()
    _record_event(recipient.contact_id, kind, properties, now)
    note_on_delivery(recipient.delivery_id, recipient.contact_id, kind, now)
    db.session.commit()


def record_open(recipient: Recipient) -> None:
    """Record that `recipient` opened the email (the pixel was fetched)."""
    if not intake.append(EventKind.EMAIL_OPEN, recipient):
        record_now(recipient, EventKind.EMAIL_OPEN)


def record_click(recipient: Recipient, url: str) -> None:
    """Record that `recipient` followed the link to `url`."""
    if not intake.append(EventKind.EMAIL_CLICK, recipient, url):
        record_now(recipient, EventKind.EMAIL_CLICK, url)


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
