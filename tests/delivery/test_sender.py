"""The send pipeline in one process: plan, claim, send over SMTP, record, track."""

from __future__ import annotations

import email
import re
from email import policy

import pytest
from sqlalchemy import func, select

from portal.audience.models import Contact, ContactConsent, ContactEvent
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery import intake
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from tests import factories


@pytest.fixture
def team(app, make_user):
    with app.app_context():
        return {role: user.id for role, user in factories.people(make_user).items()}


def _users(team):
    from portal.auth.models import User

    return {role: db.session.get(User, user_id) for role, user_id in team.items()}


def _tick_and_send(app, rounds: int = 3) -> None:
    from jobs.sending import run_campaigns, send_deliveries

    for _ in range(rounds):
        for campaign_id in db.session.scalars(select(Campaign.id).where(Campaign.status == CampaignStatus.RUNNING)):
            send_deliveries(campaign_id)
        run_campaigns()


def _counts(campaign_id: int) -> dict[str, int]:
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
    )
    return dict(rows.all())


def test_published_campaign_is_delivered_with_tracking_and_one_click_unsubscribe(app, app_ctx, smtp, team, client):
    users = _users(team)
    version = factories.approved_email(users["operations_specialist"], users["reviewer"])
    ids = factories.add_contacts(5)
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    _tick_and_send(app)

    assert _counts(campaign_id) == {DeliveryStatus.SENT: 5}
    emails = db.session.scalars(select(Contact.email).where(Contact.id.in_(ids))).all()
    assert sorted(m["to"][0] for m in smtp.messages) == sorted(emails)
    message = email.message_from_bytes(smtp.messages[0]["data"], policy=policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert re.match(r"^<d\d+\.[0-9a-f]+@example\.com>$", message["Message-ID"])
    html = message.get_body(("html",)).get_content()
    assert "https://www.example.com/product" not in html  # the link goes through the click redirect
    click_url = re.search(r'href="(http://[^"]+/t/c/[^"]+)"', html).group(1)
    pixel_url = re.search(r'src="(http://[^"]+/t/o/[^"]+)"', html).group(1)
    unsubscribe_url = message["List-Unsubscribe"].strip("<>")

    assert client.get(click_url.split("5000", 1)[-1] if ":5000" in click_url else click_url).status_code == 302
    assert client.get(pixel_url.split(":5000", 1)[-1]).status_code == 200
    assert client.post(unsubscribe_url.split(":5000", 1)[-1], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    intake.flush()  # as its periodic job does

    recipient = message["To"].addresses[0].addr_spec
    contact = db.session.scalar(select(Contact).where(Contact.email == recipient))
    db.session.refresh(contact)
    assert contact.unsubscribed
    kinds = set(db.session.scalars(select(ContactEvent.kind).where(ContactEvent.contact_id == contact.id)))
    assert {"email_open", "email_click", "unsubscribe"} <= kinds
    # The ledger row carries the first open, click and unsubscribe, which reports read.
    delivery = db.session.scalar(select(Delivery).where(Delivery.contact_id == contact.id))
    db.session.refresh(delivery)
    assert delivery.opened_at and delivery.clicked_at and delivery.unsubscribed_at
    assert delivery.opened_at <= delivery.clicked_at  # the click came first here: it is also the open
    assert db.session.get(Campaign, campaign_id).status == CampaignStatus.COMPLETED


def test_planner_records_why_each_contact_was_left_out(app, app_ctx, smtp, team):
    from portal.audience.models import Suppression  # noqa: F401 - the suppression list lives beside contacts

    users = _users(team)
    version = factories.approved_email(users["operations_specialist"], users["reviewer"])
    ok, unsubscribed, suppressed, no_consent = (factories.add_contacts(1, prefix=p)[0] for p in "abcd")
    db.session.get(Contact, unsubscribed).unsubscribed = True
    db.session.get(Contact, suppressed).suppressed = True
    db.session.execute(ContactConsent.__table__.delete().where(ContactConsent.contact_id == no_consent))
    db.session.commit()
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    from portal.campaigns.runner import run_due

    run_due()
    rows = dict(
        db.session.execute(
            select(Delivery.contact_id, Delivery.reason).where(Delivery.campaign_id == campaign_id)
        ).all()
    )
    assert rows == {ok: "", unsubscribed: "unsubscribed", suppressed: "suppressed", no_consent: "no_consent"}


def test_frequency_cap_leaves_out_contacts_who_had_two_messages_today(app, app_ctx, smtp, team):
    users = _users(team)
    version = factories.approved_email(users["operations_specialist"], users["reviewer"])
    factories.add_contacts(3)
    segment = factories.segment_of()
    for name in ("第一封", "第二封", "第三封"):
        factories.scheduled_campaign(
            users["marketing_manager"],
            segment,
            [{"kind": "message", "channel": "email", "content_version_id": version}],
            name=name,
        )
    from portal.campaigns.runner import run_due

    run_due()
    reasons = db.session.execute(select(Delivery.reason, func.count()).group_by(Delivery.reason)).all()
    assert dict(reasons) == {"": 6, "frequency_cap": 3}


def test_claims_take_at_most_their_limit_and_never_share_a_row(app, app_ctx, team):
    from portal.campaigns.runner import run_due
    from portal.delivery.sender import claim, release_expired_leases
    from portal.models_base import utcnow

    users = _users(team)
    version = factories.approved_email(users["operations_specialist"], users["reviewer"])
    factories.add_contacts(20)
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    run_due()
    first = claim(campaign_id, "sender-1", 5, lease_seconds=60)
    second = claim(campaign_id, "sender-2", 5, lease_seconds=60)
    assert len(first) == len(second) == 5
    assert not {d.id for d in first} & {d.id for d in second}
    # A dead sender's claim comes back once its lease has expired, not before.
    from datetime import timedelta

    assert release_expired_leases(utcnow()) == 0
    assert release_expired_leases(utcnow() + timedelta(seconds=61)) == 10


def test_sms_and_wecom_steps_use_the_same_ledger_retries_and_results(app, app_ctx, team, gateway):
    import json

    from jobs.sending import collect_wecom_results, run_campaigns, send_deliveries
    from tests.conftest import served
    from tests.delivery.wecom_stubs import CustomerApi

    users = _users(team)
    versions = {
        kind: factories.approved_content(
            users["operations_specialist"], users["reviewer"], f"{kind} 通知", fields, kind
        )
        for kind, fields in (
            ("sms", {"sms_text": "{{ contact.name }}您好，新品上市。回T退订"}),
            ("wecom", {"wecom_text": "新品发布会：{{ contact.name|default('您好') }}", "wecom_format": "text"}),
        )
    }
    ok, invalid = factories.add_contacts(2, channels=("sms", "wecom"))
    for contact_id in (ok, invalid):
        db.session.get(Contact, contact_id).wecom_external_userid = f"wm{contact_id}"
        db.session.get(Contact, contact_id).wecom_owner_userid = "zhangsan"
    db.session.commit()
    with served(CustomerApi()) as wecom:
        wecom.add_customer("zhangsan", f"wm{ok}")
        wecom.add_customer("zhangsan", f"wm{invalid}")
        app.config.update(
            SMS_API_URL=f"{gateway.url}/sms",
            SMS_API_SECRET="gateway-secret",
            WECOM_API_URL=wecom.url,
            WECOM_CORP_ID="ww-corp",
            WECOM_CONTACT_SECRET="contact-secret",
        )
        try:
            campaign_id = factories.scheduled_campaign(
                users["marketing_manager"],
                factories.segment_of(),
                [{"kind": "message", "channel": kind, "content_version_id": v} for kind, v in versions.items()],
            )
            # The gateway: the first number is busy once, the second does not exist.
            gateway.replies[:] = [(503, "busy"), (200, {"code": "invalid_mobile"})]
            run_campaigns()
            send_deliveries(campaign_id)
            app.config["DELIVERY_RETRY_DELAYS"] = "0"
            db.session.execute(Delivery.__table__.update().values(due_at=func.now()))  # the retry is due
            db.session.commit()
            send_deliveries(campaign_id)
            run_campaigns()
            send_deliveries(campaign_id)
            wecom.confirm()  # the owning employee sends the task in the WeCom app
            collect_wecom_results()
        finally:
            app.config.update(
                SMS_API_URL="",
                SMS_API_SECRET="",
                WECOM_CORP_ID="",
                WECOM_CONTACT_SECRET="",
                DELIVERY_RETRY_DELAYS="60,300,1800,7200",
            )
    rows = db.session.execute(select(Delivery.channel, Delivery.contact_id, Delivery.status, Delivery.attempts)).all()
    assert sorted(rows) == sorted(
        [
            ("sms", ok, "sent", 2),  # busy once, then sent
            ("sms", invalid, "bounced", 1),
            ("wecom", ok, "sent", 1),  # through the owner's mass-send task, confirmed
            ("wecom", invalid, "skipped", 1),  # suppressed by its bounce a moment before
        ]
    )
    assert db.session.get(Contact, invalid).suppressed
    sms_bodies = [json.loads(r["body"]) for r in gateway.requests if r["path"] == "/sms"]
    assert sms_bodies[0]["content"].endswith("您好，新品上市。回T退订") and sms_bodies[0]["message_id"].startswith("d")
    [task] = wecom.task_bodies()
    assert task["sender"] == "zhangsan" and task["external_userid"] == [f"wm{ok}"]
    assert task["text"] == {"content": "新品发布会：您好"}  # one text for all: no contact's name
