"""The contact's 360° view: what was sent, what the person did with it, and why the score
and the stage moved."""

from sqlalchemy import select

from portal.audience import scoring, service
from portal.audience.models import Contact, ContactEvent, ScoringRule
from portal.auth.models import User
from portal.campaigns.models import CampaignStep
from portal.delivery import intake, tracking
from portal.delivery.models import Delivery
from portal.delivery.tokens import Recipient
from portal.extensions import db
from portal.models_base import utcnow
from tests.factories import add_contacts, approved_email, people, scheduled_campaign, segment_of


def test_the_contact_page_shows_sends_opens_clicks_score_reasons_and_stage_changes(app, client, login_as, make_user):
    with app.app_context():
        staff = people(make_user)
        version_id = approved_email(staff["operations_specialist"], staff["reviewer"], subject="春季新品上市")
        contact_id = add_contacts(1)[0]
        campaign_id = scheduled_campaign(
            staff["marketing_manager"],
            segment_of(),
            [{"kind": "message", "channel": "email", "content_version_id": version_id}],
            name="春季活动",
        )
        step_id = db.session.scalar(select(CampaignStep.id).where(CampaignStep.campaign_id == campaign_id))
        delivery = Delivery(
            campaign_id=campaign_id,
            step_id=step_id,
            contact_id=contact_id,
            channel="email",
            content_version_id=version_id,
            status="sent",
            sent_at=utcnow(),
        )
        db.session.add(delivery)
        db.session.add(
            ScoringRule(
                label="点击价格页", event_kind="email_click", property_name="url", property_contains="pricing", points=8
            )
        )
        db.session.commit()
        recipient = Recipient(delivery.id, contact_id)
        tracking.record_open(recipient)
        tracking.record_click(recipient, "https://www.example.com/pricing")
        intake.flush()
        click = db.session.scalar(select(ContactEvent.id).where(ContactEvent.kind == "email_click"))
        scoring.score_event(click)
        service.record_event(
            contact_id, "stage_change", properties={"from": "new", "to": "growing"}, source="lifecycle"
        )
        score = db.session.get(Contact, contact_id).score
    login_as("operations_specialist")
    page = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "春季活动" in page and "春季新品上市" in page and f"#{step_id}" in page
    assert "https://www.example.com/pricing" in page  # the link clicked, beside its send
    assert "+8" in page and "“点击价格页”" in page and str(score) in page
    assert "从新客变为成长期" in page
    assert (
        "email_click" not in page
        and "{&#34;" not in page
        and '{"' not in page.split("<body", 1)[1].split("hx-indicator", 1)[1]
    )


def test_a_reviewers_request_for_changes_reaches_the_author_with_the_comment_and_a_link(
    app, client, login_as, make_user
):
    from portal.content import service as content

    with app.app_context():
        staff = people(make_user)
        author = staff["operations_specialist"]
        asset = content.create_asset(author, "email", "新品邀请")
        content.save_draft(author, asset.latest.id, {"subject": "新品", "html_body": "<p>{{ unsubscribe_url }}</p>"})
        content.submit_for_review(author, asset.latest.id)
        content.request_changes(staff["reviewer"], asset.latest.id, "标题再短一些")
        author_email, asset_id = author.email, asset.id
    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == author_email))
    with client.session_transaction() as session:
        session["_user_id"] = str(user_id)
        session["_fresh"] = True
    page = client.get("/notifications").get_data(as_text=True)
    assert "需修改：新品邀请 v1。审核意见：标题再短一些" in page and f'href="/content/{asset_id}?version=' in page
    client.post("/locale", data={"locale": "en", "next": "/notifications"})
    page = client.get("/notifications").get_data(as_text=True)
    assert "Changes requested on 新品邀请 v1: 标题再短一些" in page and "需修改" not in page
