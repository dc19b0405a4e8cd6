"""The audit trail: `record(...)` adds an event in the caller's transaction.

Events are append-only: the app has no path that updates or deletes one, apart from the
retention purge run by the maintenance job.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class AuditEvent(db.Model):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_created_at", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Kept as text so the record still says who it was after the user row changes.
    actor_label: Mapped[str] = mapped_column(String(255), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# How an action's details read as a sentence in the reader's language, registered by the area
# that records the action (its views module, where the translations live).
DESCRIPTIONS: dict[str, Callable[[dict[str, Any]], str]] = {}


def describe(action: str, details: dict[str, Any] | None) -> str | None:
    """The details of an event of `action` as a sentence, or None when the action has no
    description (or the details are not what it expects)."""
    render = DESCRIPTIONS.get(action)
    if render is None:
        return None
    try:
        return render(dict(details or {}))
    except (KeyError, TypeError, ValueError):
        return None


def record(actor: Any, action: str, target: str = "", details: dict[str, Any] | None = None) -> AuditEvent:
    """Add an audit event to the current session; the caller's commit stores it with the change.

    `actor` is a User, or None for the system or an anonymous party (failed sign-ins)."""
    event = AuditEvent(
        actor_id=getattr(actor, "id", None),
        actor_label=getattr(actor, "email", "") or ("system" if actor is None else str(actor)),
        action=action,
        target=target,
        details=details or {},
    )
    db.session.add(event)
    return event
