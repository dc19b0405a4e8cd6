"""Test sends through a real worker and SMTP server, the audience preview, the publish gate."""

import email
import email.policy
import json
import time

import pytest
from sqlalchemy import select

from portal.auth.models import User
from portal.campaigns import publishing, service
from portal.campaigns.models import Campaign, CampaignStep, TestSend
from portal.extensions import db


def user(user_id):
    return db.session.get(User, user_id)


@pytest.fixture
def campaign(app, setup):
    with app.app_context():
        actor = user(setup["manager"])
        campaign = service.create_campaign(actor, {"name": "新品邀请", "segment_id": setup["segment"]})
        step = service.add_step(actor, campaign.id, "message", channel="email", content_version_id=setup["approved"])
        return {"id": campaign.id, "step": step.id, **setup}


def record_successful_test_send(campaign) -> None:
    """As if the worker had just sent the step's test message (inside an app context)."""
    db.session.add(
        TestSend(
            campaign_id=campaign["id"],
            step_id=campaign["step"],
            status="sent",
            content_version_id=campaign["approved"],
            recipient="wang@example.com",
        )
    )
    db.session.commit()


def wait_for(app, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            if predicate():
                return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_test_addresses_are_limited_to_company_domains(app, campaign):
    with app.app_context():
        actor = user(campaign["manager"])
        with pytest.raises(service.CampaignError) as refused:
            publishing.add_test_address(actor, "me@gmail.com")
        assert refused.value.code == "test_address_domain"
        assert publishing.add_test_address(actor, "Me@Example.com").value == "me@example.com"


def test_test_send_goes_through_the_worker_and_the_smtp_server(app, campaign, smtp, start_worker):
    with app.app_context():
        actor = user(campaign["manager"])
        publishing.add_test_address(actor, "wang@example.com")
        publishing.start_test_send(actor, campaign["id"], [campaign["step"]])
    start_worker()
    wait_for(app, lambda: db.session.scalar(select(TestSend.status)) == "sent")
    assert len(smtp.messages) == 1
    received = smtp.messages[0]
    assert received["to"] == ["wang@example.com"]
    message = email.message_from_bytes(received["data"], policy=email.policy.default)
    assert message["Subject"] == "[TEST] 欢迎"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html = message.get_body(("html",)).get_content()
    assert "王小明" in html  # the sample contact
    with app.app_context():
        row = db.session.scalar(select(TestSend))
        assert row.recipient == "wang@example.com" and row.subject == "[TEST] 欢迎"


def test_publish_needs_a_fresh_test_send_of_every_message_step(app, campaign):
    with app.app_context():
        actor = user(campaign["manager"])
        with pytest.raises(service.CampaignError) as refused:
            publishing.publish(actor, campaign["id"])
        assert refused.value.code == "not_ready" and refused.value.params["untested"]
        record_successful_test_send(campaign)
        # Changing the step after the test makes the test stale.
        step = db.session.get(Campaign, campaign["id"]).steps[0]
        step.config = {"note": "changed"}
        db.session.commit()
        with pytest.raises(service.CampaignError) as refused:
            publishing.publish(actor, campaign["id"])
        assert refused.value.code == "not_ready" and refused.value.params["untested"]
        record_successful_test_send(campaign)
        published = publishing.publish(actor, campaign["id"])
        assert published.status == "scheduled"


def test_a_refused_publish_says_what_is_missing_in_chinese(campaign, client, login_as):
    login_as("marketing_manager")
    page = client.post(f"/campaigns/{campaign['id']}/publish", follow_redirects=True).get_data(as_text=True)
    assert "暂时无法发布：第 1 步的当前内容需要先成功测试发送。" in page
    assert "test send" not in page


def test_publishing_needs_the_permission(app, campaign, make_user, client, login_as):
    with app.app_context():
        ops = user(make_user("operations_specialist"))
        with pytest.raises(service.CampaignError) as refused:
            publishing.publish(ops, campaign["id"])
        assert refused.value.code == "may_not_publish"
    login_as("operations_specialist")
    assert client.post(f"/campaigns/{campaign['id']}/publish").status_code == 403


def test_audience_preview_counts_who_enters_and_who_is_left_out(app, campaign):
    from portal.audience.models import Contact, ContactConsent

    with app.app_context():
        for n, (consent, unsubscribed, suppressed) in enumerate(
            [
                ("granted", False, False),
                ("granted", False, False),
                (None, False, False),
                ("granted", True, False),
                ("granted", False, True),
            ]
        ):
            contact = Contact(
                email=f"p{n}@example.com", province="上海市", unsubscribed=unsubscribed, suppressed=suppressed
            )
            db.session.add(contact)
            db.session.flush()
            if consent:
                db.session.add(ContactConsent(contact_id=contact.id, channel="email", status=consent))
        db.session.commit()
        preview = publishing.audience_preview(db.session.get(Campaign, campaign["id"]))
    # The fixture's own contact (c@example.com, 上海, no consent) is in the segment too.
    assert preview == {
        "segment": 6,
        "suppressed": 1,
        "unsubscribed": 1,
        "no_consent": 2,
        "no_address": 0,
        "frequency_cap": 0,
        "entering": 2,
        "channel": "email",
    }


def test_pause_then_cancel_and_nothing_after_cancel(app, campaign):
    with app.app_context():
        actor = user(campaign["manager"])
        record_successful_test_send(campaign)
        publishing.publish(actor, campaign["id"])
        assert publishing.change_status(actor, campaign["id"], "pause").status == "paused"
        with pytest.raises(publishing.ResumeRefused, match="use_resume"):
            publishing.publish(actor, campaign["id"])  # a paused campaign is resumed, not published again
        db.session.rollback()
        resumed = publishing.resume(actor, campaign["id"], acknowledged=False)
        assert resumed.status == "scheduled"  # resume: through the gate
        assert publishing.change_status(actor, campaign["id"], "cancel").status == "cancelled"
        with pytest.raises(service.CampaignError):
            publishing.change_status(actor, campaign["id"], "pause")
        with pytest.raises(service.CampaignError):
            publishing.publish(actor, campaign["id"])


def test_test_mobiles_are_limited_to_company_numbers(app, campaign):
    app.config["COMPANY_TEST_MOBILES"] = "+8613800138000,+86139001*"
    try:
        with app.app_context():
            actor = user(campaign["manager"])
            assert publishing.add_test_address(actor, "138 0013 8000").value == "+8613800138000"
            assert publishing.add_test_address(actor, "13900112345").value == "+8613900112345"
            with pytest.raises(service.CampaignError) as refused:
                publishing.add_test_address(actor, "13700137000")
            assert refused.value.code == "test_mobile_not_company"
    finally:
        app.config["COMPANY_TEST_MOBILES"] = ""


def test_sms_and_wecom_test_sends_go_through_their_gateways_marked_test(app, campaign, gateway, make_user):
    from jobs.sending import send_test_messages
    from portal.content import service as content
    from portal.delivery.channels.sms import sign

    app.config.update(
        COMPANY_TEST_MOBILES="+8613800138000",
        SMS_API_URL=f"{gateway.url}/sms",
        SMS_API_SECRET="gateway-secret",
        SMS_SIGN_NAME="示例科技",
        WECOM_WEBHOOK_URL=f"{gateway.url}/wecom",
    )
    try:
        with app.app_context():
            actor = user(campaign["manager"])
            author, reviewer = user(make_user("operations_specialist")), user(make_user("reviewer"))
            versions = {}
            for kind, fields in (
                ("sms", {"sms_text": "{{ contact.name }}您好，新品上市。回T退订"}),
                ("wecom", {"wecom_text": "新品发布会：{{ contact.name }}", "wecom_format": "text"}),
            ):
                asset = content.create_asset(author, kind, f"{kind} 通知")
                content.save_draft(author, asset.latest.id, fields)
                content.submit_for_review(author, asset.latest.id)
                content.approve(reviewer, asset.latest.id)
                versions[kind] = asset.latest.id
            steps = [
                service.add_step(actor, campaign["id"], "message", channel=kind, content_version_id=version).id
                for kind, version in versions.items()
            ]
            publishing.add_test_address(actor, "wang@example.com")
            with pytest.raises(service.CampaignError) as refused:
                publishing.start_test_send(actor, campaign["id"], steps)
            assert refused.value.code == "needs_test_mobile"
            publishing.add_test_address(actor, "13800138000")
            publishing.start_test_send(actor, campaign["id"], steps)
            rows = db.session.scalars(select(TestSend.id).where(TestSend.step_id.in_(steps))).all()
            assert send_test_messages(rows) == {"sent": 2, "failed": 0}
    finally:
        app.config.update(COMPANY_TEST_MOBILES="", SMS_API_URL="", SMS_API_SECRET="", WECOM_WEBHOOK_URL="")
    sms_request = next(r for r in gateway.requests if r["path"] == "/sms")
    body = json.loads(sms_request["body"])
    assert body["mobile"] == "+8613800138000" and body["content"] == "[TEST] 王小明您好，新品上市。回T退订"
    assert sms_request["headers"]["X-Signature"] == sign(
        "gateway-secret", sms_request["headers"]["X-Timestamp"], sms_request["body"]
    )
    wecom = json.loads(next(r for r in gateway.requests if r["path"] == "/wecom")["body"])
    assert wecom == {
        "msgtype": "text",
        "text": {"content": "[TEST] 新品发布会：王小明", "mentioned_mobile_list": ["+8613800138000"]},
    }


def test_ab_step_needs_a_successful_test_send_of_both_variants(app, campaign, make_user):
    from portal.content import service as content

    with app.app_context():
        author, reviewer = user(make_user("operations_specialist")), user(make_user("reviewer"))
        asset = content.create_asset(author, "email", "第1天：欢迎 B")
        content.save_draft(
            author,
            asset.latest.id,
            {"subject": "欢迎 B", "html_body": '<p>B</p><a href="{{ unsubscribe_url }}">退订</a>'},
        )
        content.submit_for_review(author, asset.latest.id)
        content.approve(reviewer, asset.latest.id)
        step = db.session.get(CampaignStep, campaign["step"])
        step.config = {"ab": {"version_b": asset.latest.id, "share": 20, "window_hours": 4, "metric": "opens"}}
        db.session.commit()
        record_successful_test_send(campaign)  # variant A only
        assert publishing.untested_steps(db.session.get(Campaign, campaign["id"])) == [step]
        db.session.add(
            TestSend(
                campaign_id=campaign["id"],
                step_id=step.id,
                status="sent",
                content_version_id=asset.latest.id,
                recipient="wang@example.com",
            )
        )
        db.session.commit()
        assert publishing.untested_steps(db.session.get(Campaign, campaign["id"])) == []


def test_test_send_to_an_address_no_longer_allowed_is_refused_by_the_worker(app, campaign, smtp):
    from jobs.sending import TEST_ADDRESS_REFUSED, send_test_messages

    app.config["COMPANY_EMAIL_DOMAINS"] = "example.com,old.example.com"
    try:
        with app.app_context():
            actor = user(campaign["manager"])
            publishing.add_test_address(actor, "wang@old.example.com")
            publishing.start_test_send(actor, campaign["id"], [campaign["step"]])
            ids = db.session.scalars(select(TestSend.id).where(TestSend.campaign_id == campaign["id"])).all()
            # The domain is taken off the list before the worker gets to the message.
            app.config["COMPANY_EMAIL_DOMAINS"] = "example.com"
            assert send_test_messages(ids) == {"sent": 0, "failed": 1}
            row = db.session.get(TestSend, ids[0])
            assert (row.status, row.message, row.sent_at) == ("failed", TEST_ADDRESS_REFUSED, None)
    finally:
        app.config["COMPANY_EMAIL_DOMAINS"] = "example.com"
    assert smtp.messages == []
