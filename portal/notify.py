"""In-portal notifications: alerts, reviews waiting, reports ready.

A notification is stored as a kind and its parameters ("content.changes_requested", with the
asset's name and the reviewer's comment) and made a sentence in the reader's language when it
is shown; `message` is only the fallback for kinds this code does not know."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import g, has_request_context
from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow


class Notification(db.Model):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_unread", "user_id", "read"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    message: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(64), default="", server_default="")
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    link: Mapped[str] = mapped_column(String(500), default="")
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def notify(recipient_ids: Iterable[int], message: str = "", link: str = "", kind: str = "", **params: Any) -> None:
    """Queue a notification for each recipient in the caller's transaction: a `kind` with its
    parameters (see portal.labels.NOTIFICATIONS), linking to the object it is about. The
    sentence in the portal's default language is kept as `message`, for kinds a later version
    of the code might no longer know."""
    if kind and not message:
        from flask import current_app
        from flask_babel import force_locale

        from portal.labels import notification_text

        with force_locale(current_app.config["BABEL_DEFAULT_LOCALE"]):
            message = notification_text(kind, params)
    recipients = set(recipient_ids)
    _forget_unread(recipients)
    for user_id in recipients:
        db.session.add(
            Notification(user_id=user_id, message=message[:500], link=link, kind=kind, params=params or None)
        )


def unread_count_of(user_id_column: Any):
    """The unread count as a subquery, for a statement that reads the user anyway (the
    session loader reads it with the session row: one round trip per signed-in page)."""
    return (
        select(func.count())
        .where(Notification.user_id == user_id_column, Notification.read.is_(False))
        .scalar_subquery()
    )


_UNREAD_KEY = "unread_notifications"


def remember_unread(user_id: int, count: int) -> None:
    """Keep a count read with the request's first statement for the rest of the request."""
    if has_request_context():
        g.setdefault(_UNREAD_KEY, {})[user_id] = count


def _forget_unread(user_ids: Iterable[int] | None = None) -> None:
    if has_request_context() and _UNREAD_KEY in g:
        if user_ids is None:
            g.pop(_UNREAD_KEY)
        else:
            for user_id in user_ids:
                g.get(_UNREAD_KEY).pop(user_id, None)


def unread_count(user_id: int) -> int:
    """The header's badge: the count read with the session row when there is one (a
    notification added or read in this request forgets it), else counted now."""
    if has_request_context():
        remembered = g.get(_UNREAD_KEY, {}).get(user_id)
        if remembered is not None:
            return remembered
    query = select(func.count()).where(Notification.user_id == user_id, Notification.read.is_(False))
    return db.session.scalar(query) or 0


def recent(user_id: int, limit: int = 50) -> list[Notification]:
    query = (
        select(Notification)
        .where(Notification.user_id == user_id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(query))


def mark_all_read(user_id: int) -> None:
    _forget_unread([user_id])
    db.session.execute(update(Notification).where(Notification.user_id == user_id).values(read=True))
    db.session.commit()
