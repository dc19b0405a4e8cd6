"""A campaign's deliveries and one delivery's attempts: for those who read campaign reports."""

from __future__ import annotations

from datetime import timedelta

from portal.delivery.models import Delivery, DeliveryAttempt, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories


def _delivery_with_two_attempts(app, make_user) -> tuple[int, int]:
    from portal.auth.models import User

    with app.app_context():
        users = {role: db.session.get(User, make_user(role)) for role in ("operations_specialist", "reviewer")}
        manager = db.session.get(User, make_user("marketing_manager"))
        version = factories.approved_email(users["operations_specialist"], users["reviewer"])
        [contact_id] = factories.add_contacts(1)
        campaign_id = factories.scheduled_campaign(
            manager, factories.segment_of(), [{"kind": "message", "channel": "email", "content_version_id": version}]
        )
        from portal.campaigns.models import CampaignStep

        step = db.session.query(CampaignStep).filter_by(campaign_id=campaign_id).one()
        now = utcnow()
        delivery = Delivery(
            campaign_id=campaign_id,
            step_id=step.id,
            contact_id=contact_id,
            channel="email",
            content_version_id=version,
            status=DeliveryStatus.SENT,
            attempts=2,
            sent_at=now,
        )
        db.session.add(delivery)
        db.session.flush()
        db.session.add_all(
            [
                DeliveryAttempt(
                    delivery_id=delivery.id,
                    attempt=1,
                    outcome="retry",
                    code=450,
                    detail="4.2.1",
                    message="450 4.2.1 Mailbox busy",
                    occurred_at=now - timedelta(minutes=1),
                ),
                DeliveryAttempt(delivery_id=delivery.id, attempt=2, outcome="accepted", code=250, occurred_at=now),
            ]
        )
        db.session.commit()
        return campaign_id, delivery.id


def test_delivery_detail_shows_every_attempt_in_the_readers_language(app, client, login_as, make_user):
    campaign_id, delivery_id = _delivery_with_two_attempts(app, make_user)
    login_as("data_analyst")
    page = client.get(f"/campaigns/{campaign_id}/deliveries/{delivery_id}", headers={"Accept-Language": "zh-CN"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "450 4.2.1 Mailbox busy" in html and "retry" not in html and "accepted" not in html
    listing = client.get(f"/campaigns/{campaign_id}/deliveries?status=sent")
    assert listing.status_code == 200 and f"/deliveries/{delivery_id}" in listing.get_data(as_text=True)


def test_delivery_pages_need_the_report_permission(app, client, login_as, make_user):
    campaign_id, delivery_id = _delivery_with_two_attempts(app, make_user)
    login_as("reviewer")
    assert client.get(f"/campaigns/{campaign_id}/deliveries/{delivery_id}").status_code == 403
    assert client.get(f"/campaigns/{campaign_id}/deliveries").status_code == 403


def test_a_delivery_of_another_campaign_is_not_found(app, client, login_as, make_user):
    campaign_id, delivery_id = _delivery_with_two_attempts(app, make_user)
    login_as("data_analyst")
    assert client.get(f"/campaigns/{campaign_id + 1}/deliveries/{delivery_id}").status_code == 404
