"""Fixed campaign data whose figures were computed by hand (see FIGURES)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from portal.auth.models import User
from portal.extensions import db

# 2026-03-02 10:00 in Shanghai.
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
CAMPAIGN_NAME = "春季新品发布会"
HTML = '<p>{{ contact.name | default("客户") }}</p><a href="{{ unsubscribe_url }}">退订</a>'

# Campaign A, worked out by hand from the rows below:
#   ledger: step 1 (email) c1 c2 c3 sent, c4 bounced, c5 failed soft_bounce, c6 excluded;
#           step 2 (sms) c1 c2 sent, c3 failed (no reason).
#   audience 8, attempted 8, delivered 5 -> 62.5 %; opens 3 (c3 only clicked) -> 60.0 %;
#   clicks 2 -> 40.0 %; click-to-open 2/3 -> 66.7 %; reached 3 (c1 c2 c3); conversions 1 (c1's
#   purchase two days later; c3 bought before, c2 after the 30-day window) -> 33.3 %;
#   cost 500 + 100 = 600, revenue 1000 (purchase) + 200 (entered) = 1200, CPA 600, ROI 100.0 %.
FIGURES = {
    "audience": 8,
    "attempted": 8,
    "delivered": 5,
    "hard_bounces": 1,
    "soft_bounces": 1,
    "opens": 3,
    "clicks": 2,
    "unsubscribes": 1,
    "reached": 3,
    "conversions": 1,
}


@pytest.fixture
def report_data(app, make_user):
    """Two campaigns with a ledger, tracking events, purchases, costs and an alert."""
    from portal import audit
    from portal.audience.models import Contact, ContactEvent, ContactTag, Tag
    from portal.campaigns.models import Campaign, CampaignStep
    from portal.content import service as content
    from portal.delivery.models import Delivery
    from portal.delivery.tracking import note_on_delivery
    from portal.reports.models import CampaignCost

    with app.app_context():
        author = db.session.get(User, make_user("operations_specialist"))
        reviewer = db.session.get(User, make_user("reviewer"))
        manager = db.session.get(User, make_user("marketing_manager", name="王经理"))
        asset = content.create_asset(author, "email", "欢迎")
        content.save_draft(author, asset.latest.id, {"subject": "欢迎", "html_body": HTML})
        content.submit_for_review(author, asset.latest.id)
        content.approve(reviewer, asset.latest.id)
        version_id = asset.latest.id

        a = Campaign(
            name=CAMPAIGN_NAME,
            owner_id=manager.id,
            status="running",
            goal_metric="conversion_rate",
            goal_target=30.0,
            goal_days=30,
        )
        b = Campaign(name="Other campaign", owner_id=manager.id, status="running")
        db.session.add_all([a, b])
        db.session.flush()
        s1 = CampaignStep(campaign_id=a.id, position=0, kind="message", channel="email", content_version_id=version_id)
        s2 = CampaignStep(campaign_id=a.id, position=1, kind="message", channel="sms", content_version_id=version_id)
        sb = CampaignStep(campaign_id=b.id, position=0, kind="message", channel="email", content_version_id=version_id)
        db.session.add_all([s1, s2, sb])
        vip = Tag(name="VIP")
        db.session.add(vip)
        people = [
            ("上海市", "科技", "new"),
            ("上海市", "零售", "growing"),
            ("浙江省", "科技", "new"),
            ("浙江省", "制造", "stable"),
            ("北京市", "科技", "new"),
            ("北京市", "金融", "dormant"),
        ]
        contacts = [
            Contact(email=f"c{n}@example.com", province=p, industry=i, lifecycle_stage=s)
            for n, (p, i, s) in enumerate(people, start=1)
        ]
        db.session.add_all(contacts)
        db.session.flush()
        c1, c2, c3, c4, c5, c6 = contacts
        db.session.add_all([ContactTag(contact_id=c1.id, tag_id=vip.id), ContactTag(contact_id=c2.id, tag_id=vip.id)])

        def delivery(step, contact, status, sent_at=None, reason=""):
            row = Delivery(
                campaign_id=step.campaign_id,
                step_id=step.id,
                contact_id=contact.id,
                channel=step.channel,
                content_version_id=version_id,
                status=status,
                reason=reason,
                due_at=sent_at or T0,
                sent_at=sent_at if status == "sent" else None,
            )
            db.session.add(row)
            return row

        T1 = T0 + timedelta(days=1)
        d11 = delivery(s1, c1, "sent", T0)
        d12 = delivery(s1, c2, "sent", T0)
        d13 = delivery(s1, c3, "sent", T0)
        delivery(s1, c4, "bounced", T0)
        delivery(s1, c5, "failed", T0, "soft_bounce")
        delivery(s1, c6, "excluded", reason="unsubscribed")
        delivery(s2, c1, "sent", T1)
        delivery(s2, c2, "sent", T1)
        delivery(s2, c3, "failed", T1)
        db_ = delivery(sb, c4, "sent", T0 + timedelta(days=8))
        db.session.flush()

        def event(contact, kind, at, **properties):
            db.session.add(
                ContactEvent(contact_id=contact.id, kind=kind, occurred_at=at, properties=properties, source="tracking")
            )
            if kind in ("email_open", "email_click", "unsubscribe"):
                # What the tracking endpoints write beside the event.
                note_on_delivery(properties.get("delivery_id"), contact.id, kind, at)

        event(c1, "email_open", T0 + timedelta(hours=1), delivery_id=d11.id)
        event(c1, "email_click", T0 + timedelta(hours=2), delivery_id=d11.id, url="https://example.com/a")
        event(c2, "email_open", T0 + timedelta(hours=3), delivery_id=d12.id)
        event(c2, "email_open", T1 + timedelta(hours=1), delivery_id=d12.id)
        event(c2, "unsubscribe", T1 + timedelta(hours=2), delivery_id=d12.id)
        event(c3, "email_click", T0 + timedelta(hours=5), delivery_id=d13.id, url="https://example.com/b")
        event(c1, "purchase", T0 + timedelta(days=2), amount=1000)
        event(c3, "purchase", T0 - timedelta(days=1), amount=300)
        event(c2, "purchase", T0 + timedelta(days=40), amount=500)
        event(c5, "form_submit", T0 + timedelta(days=1))
        event(c4, "email_open", T0 + timedelta(days=8, hours=1), delivery_id=db_.id)
        db.session.add_all(
            [
                CampaignCost(
                    campaign_id=a.id,
                    spent_on=T0.date(),
                    cost=Decimal("500"),
                    revenue=Decimal("200"),
                    note="展会 <b>",
                    entered_by_id=manager.id,
                ),
                CampaignCost(
                    campaign_id=a.id,
                    spent_on=T0.date(),
                    cost=Decimal("100"),
                    revenue=Decimal("0"),
                    entered_by_id=manager.id,
                ),
            ]
        )
        audit.record(None, "campaign.auto_paused", f"campaign:{a.id}", {"reason": "退订率超过 2%"})
        db.session.commit()
        return {"campaign": a.id, "other": b.id, "step1": s1.id, "step2": s2.id, "manager": manager.id}
