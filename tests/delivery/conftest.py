"""Fixtures of the delivery tests: contacts and the app's tracking tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def make_contact(app) -> Callable[..., int]:
    """Create a contact; returns its id."""

    def make(email: str = "li.lei@example.com", name: str = "李雷", **fields) -> int:
        from portal.audience.models import Contact
        from portal.extensions import db

        with app.app_context():
            contact = Contact(email=email, name=name, **fields)
            db.session.add(contact)
            db.session.commit()
            return contact.id

    return make


@pytest.fixture
def tokens(app):
    from portal.delivery.tokens import tracking_tokens

    return tracking_tokens(app)
