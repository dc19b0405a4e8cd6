"""Identity rules: loading users for a session, the user's own settings."""

from __future__ import annotations

from portal.auth.models import User
from portal.extensions import db


def load_user(user_id: str) -> User | None:
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    return user if user is not None and user.active else None


def save_locale(user: User, locale: str) -> None:
    user.locale = locale
    db.session.commit()
