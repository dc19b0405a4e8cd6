"""The sequence runner: delays, branches, actions, exits and A/B tests, moved in sets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.audience.models import Contact, ContactEvent, ContactTag, Tag
from portal.campaigns.models import AbResult, Campaign, CampaignStatus, Journey
from portal.campaigns.runner import next_send_time, run_due
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import Notification
from tests import factories


@pytest.fixture
def people(app, app_ctx, make_user):
    return factories.people(make_user)


@pytest.fixture
def version(people):
    return factories.approved_email(people["operations_specialist"], people["reviewer"])


def _message(version_id: int) -> dict:
    return {"kind": "message", "channel": "email", "content_version_id": version_id}


def _planned(step_id: int) -> set[int]:
    return set(db.session.scalars(select(Delivery.contact_id).where(Delivery.step_id == step_id)))


def _steps(campaign_id: int) -> list[int]:
    """Step ids in flow order (a branch, then its yes path, then its no path)."""
    from portal.campaigns.service import in_flow_order

    return [s.id for s in in_flow_order(db.session.get(Campaign, campaign_id))]


def _event(contact_id: int, kind: str, **properties) -> None:
    db.session.add(ContactEvent(contact_id=contact_id, kind=kind, properties=properties, source="test"))
    db.session.commit()


def test_delays_hold_each_message_until_its_day(people, version):
    factories.add_contacts(3)
    campaign_id = factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [_message(version), {"kind": "delay", "config": {"days": 2}}, _message(version)],
    )
    first, _delay, third = _steps(campaign_id)
    now = utcnow()
    run_due(now)
    assert len(_planned(first)) == 3 and not _planned(third)
    run_due(now + timedelta(days=1, hours=23))
    assert not _planned(third)
    run_due(now + timedelta(days=2, minutes=1))
    assert len(_planned(third)) == 3
    due = db.session.scalars(select(Delivery.due_at).where(Delivery.step_id == third)).all()
    assert all(d >= now + timedelta(days=2) for d in due)


def test_click_branch_notifies_owner_for_clickers_and_sends_the_rest_another_email(people, version):
    clicker, idle = factories.add_contacts(2, owner_id=people["marketing_manager"].id)
    campaign_id = factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [
            _message(version),
            {
                "kind": "branch",
                "config": {"condition": "clicked", "window_days": 3},
                "children": {
                    "yes": [{"kind": "action", "config": {"type": "notify_owner"}}],
                    "no": [_message(version)],
                },
            },
        ],
    )
    _first, _branch, _notify_step, follow_up = _steps(campaign_id)
    now = utcnow()
    run_due(now)
    delivery = db.session.scalar(select(Delivery.id).where(Delivery.contact_id == clicker))
    _event(clicker, "email_click", delivery_id=delivery, url="https://www.example.com/product")
    run_due(now + timedelta(minutes=5))
    notes = db.session.scalars(
        select(Notification.message).where(Notification.user_id == people["marketing_manager"].id)
    )
    assert any("客户" in n for n in notes)
    assert not _planned(follow_up)
    run_due(now + timedelta(days=3, minutes=1))
    assert _planned(follow_up) == {idle}
    journeys = dict(db.session.execute(select(Journey.contact_id, Journey.status)).all())
    assert journeys == {clicker: "completed", idle: "completed"}


def test_actions_tag_and_score_once_even_when_ticks_overlap(people, version):
    (contact,) = factories.add_contacts(1)
    factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [
            _message(version),
            {"kind": "action", "config": {"type": "add_tag", "value": "新品兴趣"}},
            {"kind": "action", "config": {"type": "change_score", "value": 10}},
        ],
    )
    now = utcnow()
    before = db.session.get(Contact, contact).score
    run_due(now)
    run_due(now)
    db.session.expire_all()
    assert db.session.get(Contact, contact).score == before + 10
    tag = db.session.scalar(select(Tag).where(Tag.name == "新品兴趣"))
    assert db.session.get(ContactTag, (contact, tag.id)) is not None


def test_conversion_exit_cancels_what_was_not_sent(people, version):
    buyer, other = factories.add_contacts(2)
    _event(buyer, "purchase")  # before entering: does not count
    factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [
            _message(version),
            {"kind": "delay", "config": {"days": 1}},
            _message(version),
            {"kind": "exit", "config": {"reason": "converted", "value": "purchase"}},
        ],
    )
    now = utcnow()
    run_due(now)
    assert set(db.session.scalars(select(Delivery.status))) == {DeliveryStatus.PENDING}
    db.session.add(ContactEvent(contact_id=buyer, kind="purchase", occurred_at=now + timedelta(minutes=1)))
    db.session.commit()
    run_due(now + timedelta(minutes=2))
    statuses = dict(db.session.execute(select(Delivery.contact_id, Delivery.status)).all())
    assert statuses == {buyer: DeliveryStatus.CANCELLED, other: DeliveryStatus.PENDING}
    journeys = dict(db.session.execute(select(Journey.contact_id, Journey.exit_reason)).all())
    assert journeys == {buyer: "converted", other: ""}


def test_unsubscribed_contact_leaves_and_pending_messages_are_cancelled(people, version):
    leaver, stayer = factories.add_contacts(2)
    campaign_id = factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [_message(version), {"kind": "delay", "config": {"days": 1}}, _message(version)],
    )
    now = utcnow()
    run_due(now)
    db.session.get(Contact, leaver).unsubscribed = True
    db.session.commit()
    run_due(now + timedelta(minutes=1))
    statuses = dict(db.session.execute(select(Delivery.contact_id, Delivery.status)).all())
    assert statuses == {leaver: DeliveryStatus.CANCELLED, stayer: DeliveryStatus.PENDING}
    run_due(now + timedelta(days=1, minutes=2))
    last = _steps(campaign_id)[-1]
    assert _planned(last) == {stayer}


def test_ab_test_sends_variants_to_the_share_then_the_winner_to_the_rest(people, version):
    version_b = factories.approved_email(people["operations_specialist"], people["reviewer"], name="B", subject="B版")
    factories.add_contacts(200)
    campaign_id = factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [
            {
                **_message(version),
                "config": {"ab": {"version_b": version_b, "share": 20, "window_hours": 4, "metric": "clicks"}},
            }
        ],
    )
    (step,) = _steps(campaign_id)
    now = utcnow()
    run_due(now)
    variants = dict(
        db.session.execute(
            select(Delivery.variant, func.count()).where(Delivery.step_id == step).group_by(Delivery.variant)
        ).all()
    )
    assert variants.keys() == {"a", "b"} and 30 <= variants["a"] + variants["b"] <= 50
    # B's recipients click; A's do not.
    db.session.execute(
        Delivery.__table__.update().where(Delivery.step_id == step).values(status=DeliveryStatus.SENT, sent_at=now)
    )
    for delivery_id, contact_id in db.session.execute(
        select(Delivery.id, Delivery.contact_id).where(Delivery.variant == "b")
    ).all()[:5]:
        _event(contact_id, "email_click", delivery_id=delivery_id, url="https://www.example.com/product")
    run_due(now + timedelta(hours=3))
    assert db.session.scalar(select(func.count()).where(Delivery.variant == "winner")) == 0
    run_due(now + timedelta(hours=4, minutes=1))
    result = db.session.get(AbResult, step)
    assert result.winner == "b" and result.winner_version_id == version_b
    winners = db.session.scalars(select(Delivery.content_version_id).where(Delivery.variant == "winner")).all()
    assert len(winners) == 200 - variants["a"] - variants["b"] and set(winners) == {version_b}


def test_campaign_starts_once_and_completes_when_everything_is_sent(people, version):
    factories.add_contacts(2)
    campaign_id = factories.scheduled_campaign(people["marketing_manager"], factories.segment_of(), [_message(version)])
    now = utcnow()
    run_due(now)
    run_due(now)
    assert db.session.scalar(select(func.count()).where(Delivery.campaign_id == campaign_id)) == 2
    db.session.execute(Delivery.__table__.update().values(status=DeliveryStatus.SENT, sent_at=now))
    db.session.commit()
    run_due(now)
    campaign = db.session.get(Campaign, campaign_id)
    db.session.refresh(campaign)
    assert campaign.status == CampaignStatus.COMPLETED


def test_messages_planned_outside_the_send_window_wait_for_it_to_open(people):
    campaign = Campaign(name="x", window_start="09:00", window_end="21:00", timezone="Asia/Shanghai")
    late = utcnow().replace(hour=14, minute=30, second=0, microsecond=0)  # 22:30 in Shanghai
    opening = next_send_time(campaign, late)
    assert opening.astimezone().utcoffset() is not None
    assert (opening - late) == timedelta(hours=10, minutes=30)
    inside = utcnow().replace(hour=2, minute=0)  # 10:00 in Shanghai
    assert next_send_time(campaign, inside) == inside


def test_campaign_page_shows_progress_and_why_it_was_paused(app, client, login_as, people, version):
    from flask_babel import force_locale

    from portal.campaigns.monitoring import check_alerts, count_results
    from portal.labels import notification_text

    factories.add_contacts(120)
    campaign_id = factories.scheduled_campaign(people["marketing_manager"], factories.segment_of(), [_message(version)])
    run_due()
    # 113 sent, 7 hard bounces: a delivery rate of 94.2 % (fine) but a bounce rate of 5.8 %.
    ids = db.session.scalars(select(Delivery.id).order_by(Delivery.id)).all()
    db.session.execute(
        Delivery.__table__.update().where(Delivery.id.in_(ids[:113])).values(status="sent", sent_at=utcnow())
    )
    db.session.execute(Delivery.__table__.update().where(Delivery.id.in_(ids[113:])).values(status="bounced"))
    count_results(campaign_id, sent=113, bounced=7, failed=0)  # as the sender counts what it records
    db.session.commit()
    assert "Bounce rate 5.8%" in check_alerts(campaign_id)
    assert db.session.get(Campaign, campaign_id).status == CampaignStatus.PAUSED
    (owner_note,) = db.session.scalars(
        select(Notification).where(
            Notification.user_id == people["marketing_manager"].id, Notification.kind == "campaign.auto_paused"
        )
    ).all()
    with app.test_request_context(), force_locale("zh_CN"):
        chinese = notification_text(owner_note.kind, owner_note.params, owner_note.message)
    with app.test_request_context(), force_locale("en"):
        english_note = notification_text(owner_note.kind, owner_note.params, owner_note.message)
    # The owner reads it in their language, with no word of the other.
    assert "自动暂停" in chinese and "退回率 5.8% 高于 5%" in chinese and "Bounce" not in chinese
    assert english_note == "Campaign paused automatically: 测试活动 — Bounce rate 5.8% is above 5% after 120 messages."

    login_as("operations_specialist")
    page = client.get(f"/campaigns/{campaign_id}/progress", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="progress-sent">113<' in page and 'id="progress-bounced">7<' in page
    assert "退回率 5.8% 高于 5%" in page  # the reason, in the reader's language
    english = client.get(
        f"/campaigns/{campaign_id}/progress", headers={"HX-Request": "true", "Accept-Language": "en"}
    ).get_data(as_text=True)
    assert "Bounce rate 5.8% is above 5% after 120 messages." in english
    assert "every 2s" not in page  # a paused campaign's progress stops polling


def test_progress_says_when_messages_wait_for_the_send_window(app, client, login_as, people, version):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    factories.add_contacts(2)
    shanghai = datetime.now(ZoneInfo("Asia/Shanghai"))
    opens, closes = shanghai + timedelta(hours=2), shanghai + timedelta(hours=3)
    campaign_id = factories.scheduled_campaign(people["marketing_manager"], factories.segment_of(), [_message(version)])
    campaign = db.session.get(Campaign, campaign_id)
    campaign.window_start, campaign.window_end = opens.strftime("%H:%M"), closes.strftime("%H:%M")
    db.session.commit()
    run_due()
    assert all(d > utcnow() + timedelta(hours=1) for d in db.session.scalars(select(Delivery.due_at)))
    login_as("operations_specialist")
    page = client.get(f"/campaigns/{campaign_id}/progress", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="window-wait"' in page and opens.strftime("%H:%M") in page


def test_a_flow_may_open_with_a_delay_and_a_start_campaign_takes_its_segment_once(people, version):
    factories.add_contacts(2)
    campaign_id = factories.scheduled_campaign(
        people["marketing_manager"],
        factories.segment_of(),
        [{"kind": "delay", "config": {"hours": 2}}, _message(version)],
    )
    _delay, message = _steps(campaign_id)
    now = utcnow()
    run_due(now)
    assert db.session.scalar(select(func.count()).where(Journey.campaign_id == campaign_id)) == 2
    factories.add_contacts(1)  # joins the segment after the start: not part of this campaign
    run_due(now + timedelta(hours=2, minutes=1))
    assert len(_planned(message)) == 2
    assert db.session.scalar(select(func.count()).where(Journey.campaign_id == campaign_id)) == 2
