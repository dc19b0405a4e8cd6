import io

import pytest

from portal.auth.models import User
from portal.extensions import db


def actor(user_id: int) -> User:
    return db.session.get(User, user_id)


@pytest.fixture
def manager(make_user):
    return make_user("marketing_manager", name="王经理")


@pytest.fixture
def import_file(app, manager):
    """Upload bytes and run the import synchronously (the worker path is tested separately)."""
    from portal.audience import importing

    def run(
        data: bytes,
        name: str = "contacts.csv",
        mapping: dict | None = None,
        policy: str = "fill",
        consent: str = "none",
    ):
        with app.app_context():
            job = importing.save_upload(actor(manager), name, io.BytesIO(data))
            preview = importing.preview(job)
            importing.confirm(actor(manager), job.id, mapping or preview.suggested, policy, consent)
            job = importing.run_import(job.id)
            db.session.refresh(job)
            db.session.expunge(job)
            return job

    return run


@pytest.fixture
def sign_in(client):
    """Sign the test client in as an existing user (the one who uploaded an import)."""
    from datetime import UTC, datetime

    from portal.access import SIGNED_IN_AT_KEY

    def sign(user_id: int) -> None:
        with client.session_transaction() as session:
            session["_user_id"] = str(user_id)
            session["_fresh"] = True
            session[SIGNED_IN_AT_KEY] = datetime.now(UTC).isoformat()

    return sign
