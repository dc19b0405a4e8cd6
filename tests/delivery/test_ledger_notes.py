"""What an update of the deliveries ledger notes for the report rollups: the contacts of the rows
whose status class or counted columns changed, nobody else (a sender's claim, a lease or a
result message note nothing). PostgreSQL notes them once per statement, SQLite once per row:
the same contacts."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from portal.campaigns.models import CampaignStep
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.reports.models import ReportDirtyContact
from tests.factories import add_contacts, approved_email, people, scheduled_campaign, segment_of


@pytest.fixture
def ledger(app_ctx, make_user) -> list[Delivery]:
    """Four pending deliveries, one per contact, none noted yet."""
    staff = people(make_user)
    version_id = approved_email(staff["operations_specialist"], staff["reviewer"], subject="双十二预告")
    contact_ids = add_contacts(4)
    campaign_id = scheduled_campaign(
        staff["marketing_manager"],
        segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version_id}],
    )
    step_id = db.session.scalar(select(CampaignStep.id).where(CampaignStep.campaign_id == campaign_id))
    rows = [
        Delivery(
            campaign_id=campaign_id,
            step_id=step_id,
            contact_id=contact_id,
            channel="email",
            content_version_id=version_id,
            status=DeliveryStatus.PENDING,
        )
        for contact_id in contact_ids
    ]
    db.session.add_all(rows)
    db.session.commit()
    _noted()
    return rows


def _noted() -> set[int]:
    """The contacts noted since the last call (the notes are taken off)."""
    contact_ids = set(db.session.scalars(select(ReportDirtyContact.contact_id)))
    db.session.execute(delete(ReportDirtyContact))
    db.session.commit()
    return contact_ids


def _update(rows: list[Delivery], **values) -> None:
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_([row.id for row in rows]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def test_a_claim_a_lease_and_a_result_message_note_nobody(ledger):
    _update(ledger, status=DeliveryStatus.SENDING, lease_owner="sender-1", attempts=Delivery.attempts + 1)
    _update(ledger[:2], result_message="250 queued", result_code=250, lease_owner=None)
    _update(ledger[2:], status=DeliveryStatus.PENDING)  # pending and sending count alike
    assert _noted() == set()


def test_the_rows_whose_counted_columns_change_note_their_contacts_and_only_those(ledger):
    a, b, c, d = ledger
    now = utcnow()
    _update([a, b], status=DeliveryStatus.SENT, sent_at=now)
    assert _noted() == {a.contact_id, b.contact_id}
    # One statement over rows of which only some change: only those are noted.
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_([a.id, b.id, c.id]))
        .values(opened_at=Delivery.sent_at)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    assert _noted() == {a.contact_id, b.contact_id}  # c's opened_at stayed NULL
    _update([a], opened_at=now)  # the same time again: nothing changed
    assert _noted() == set()
    _update([b], status=DeliveryStatus.BOUNCED)
    _update([c], status=DeliveryStatus.EXCLUDED, reason="frequency_cap")
    assert _noted() == {b.contact_id, c.contact_id}
    for column in ("clicked_at", "unsubscribed_at", "due_at"):
        _update([d], **{column: now})
        assert _noted() == {d.contact_id}, column
    _update([d], channel="sms")
    assert _noted() == {d.contact_id}


def test_a_delivery_moved_to_another_contact_notes_both(ledger):
    a = ledger[0]
    before = a.contact_id
    [spare] = add_contacts(1)
    _noted()
    _update([a], contact_id=spare)
    assert _noted() == {before, spare}
