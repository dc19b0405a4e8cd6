"""Demo data for `make run`: each area contributes a loader; all are idempotent."""

from __future__ import annotations

from collections.abc import Callable

from portal.admin.service import add_mapping, ensure_builtin_roles


def demo_sso_mapping() -> None:
    """Map the development provider's groups to the built-in roles."""
    from portal.dev.identities import DEMO_GROUP_ROLES

    for group, role in DEMO_GROUP_ROLES.items():
        add_mapping(None, group, role)


def demo_people() -> None:
    """The demo identities as users already, so that demo content has authors."""
    from sqlalchemy import select

    from portal.admin.service import replace_grants, roles_for_groups
    from portal.auth.models import User
    from portal.dev.identities import DEMO_IDENTITIES
    from portal.extensions import db

    for identity in DEMO_IDENTITIES:
        if db.session.scalar(select(User).where(User.sso_subject == identity["sub"])):
            continue
        groups = list(identity["groups"])
        user = User(sso_subject=identity["sub"], email=identity["email"], name=identity["name"], sso_groups=groups)
        db.session.add(user)
        db.session.flush()
        replace_grants(user.id, roles_for_groups(groups), "sso")
    db.session.commit()


DEMO_EMAIL_HTML = """<h1>{{ contact.name | default("客户") }}，您好！</h1>
<p>诚邀您参加 3 月 18 日在上海举行的<strong>春季新品发布会</strong>，现场体验全新智能营销套件。</p>
<p><a href="https://www.example.com/events/spring-launch">立即报名</a></p>
<p><img src="https://www.example.com/img/spring.png" alt="春季新品发布会"></p>
<p style="color:#888">如不想再收到此类邮件，请<a href="{{ unsubscribe_url }}">退订</a>。</p>"""


def demo_content() -> None:
    """An approved invitation email and an SMS waiting for review."""
    from sqlalchemy import select

    from portal.auth.models import User
    from portal.content import service
    from portal.content.models import Asset
    from portal.extensions import db

    if db.session.scalar(select(Asset).limit(1)):
        return
    author = db.session.scalar(select(User).where(User.email == "ops@example.com"))
    reviewer = db.session.scalar(select(User).where(User.email == "reviewer@example.com"))
    email = service.create_asset(author, "email", "春季新品发布会邀请", ["新品", "活动"])
    service.save_draft(
        author,
        email.latest.id,
        {
            "subject": "{{ contact.name | default('客户') }}，春季新品发布会邀请",
            "preheader": "3 月 18 日 · 上海",
            "html_body": DEMO_EMAIL_HTML,
        },
    )
    service.submit_for_review(author, email.latest.id)
    service.approve(reviewer, email.latest.id, "内容合规，可以使用。")
    sms = service.create_asset(author, "sms", "发布会前一天提醒", ["活动"])
    service.save_draft(
        author,
        sms.latest.id,
        {
            "sms_text": "【示例科技】{{ contact.name | default('您') }}好，"
            "春季新品发布会明天 14:00 开始，期待您的到来。回T退订"
        },
    )
    service.submit_for_review(author, sms.latest.id)


def demo_audience() -> None:
    """About 200 contacts across regions and industries, with consent, events, a segment and a tag rule."""
    import random
    from datetime import timedelta

    from sqlalchemy import select

    from portal.audience import lifecycle, scoring, tag_rules
    from portal.audience.models import Contact, ContactConsent, ContactEvent, Segment
    from portal.auth.models import User
    from portal.extensions import db
    from portal.models_base import utcnow

    if db.session.scalar(select(Contact.id).limit(1)):
        return
    rng = random.Random(20261124)  # noqa: S311 - the same demo every time, not security
    surnames, given = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚"
    english = ["Emily Chen", "David Li", "Grace Wang", "Kevin Zhang", "Linda Liu", "Tom Huang", "Amy Zhao", "Jack Wu"]
    places = [
        ("上海市", "上海"),
        ("浙江省", "杭州"),
        ("江苏省", "苏州"),
        ("广东省", "深圳"),
        ("广东省", "广州"),
        ("北京市", "北京"),
        ("四川省", "成都"),
        ("湖北省", "武汉"),
        ("福建省", "厦门"),
    ]
    industries, sizes = ["科技", "零售", "制造", "金融", "教育", "医疗"], ["1-49", "50-199", "200-499", "500+"]
    owner = db.session.scalar(select(User).where(User.email == "manager@example.com"))
    now = utcnow()
    for n in range(200):
        name = english[n % len(english)] if n % 9 == 0 else rng.choice(surnames) + rng.choice(given) + rng.choice(given)
        province, city = rng.choice(places)
        contact = Contact(
            email=f"demo{n:03d}@example.com",
            mobile=f"+86138{n:08d}",
            name=name,
            company=f"示例企业{n % 40:02d}",
            industry=rng.choice(industries),
            province=province,
            city=city,
            company_size=rng.choice(sizes),
            owner_id=owner.id if owner else None,
            score=60,
            created_at=now - timedelta(days=rng.randint(1, 400)),
            attributes={"职位": rng.choice(["市场总监", "采购经理", "IT 负责人", "总经理"])},
        )
        db.session.add(contact)
        db.session.flush()
        db.session.add(
            ContactConsent(
                contact_id=contact.id, channel="email", status="granted" if n % 10 else "none", source="demo"
            )
        )
        for _ in range(rng.randint(0, 4)):
            kind = rng.choice(["page_view", "download", "webinar_attended", "purchase", "email_open", "email_click"])
            props = (
                {"url": rng.choice(["https://www.example.com/pricing", "https://www.example.com/product"])}
                if kind == "email_click"
                else {}
            )
            event = ContactEvent(
                contact_id=contact.id,
                kind=kind,
                properties=props,
                source="demo",
                occurred_at=now - timedelta(days=rng.randint(0, 120)),
            )
            db.session.add(event)
            contact.last_activity_at = max(contact.last_activity_at or event.occurred_at, event.occurred_at)
    db.session.commit()
    for event_id in db.session.scalars(select(ContactEvent.id)):
        scoring.score_event(event_id)
    lifecycle.recompute_stages()
    rules = {
        "op": "and",
        "items": [
            {"field": "region", "operator": "eq", "value": "华东"},
            {"field": "industry", "operator": "eq", "value": "科技"},
            {"field": "score", "operator": "gte", "value": 65},
        ],
    }
    db.session.add(Segment(name="华东科技行业高分客户", rules=rules, created_by_id=owner.id if owner else None))
    db.session.commit()
    high_intent = {
        "op": "and",
        "items": [
            {
                "field": "event.email_click",
                "operator": "gte",
                "value": 1,
                "days": 30,
                "property": "url",
                "contains": "pricing",
            }
        ],
    }
    rule = tag_rules.save_rule(owner, "高意向客户", high_intent)
    tag_rules.evaluate(rule.id)


def demo_campaigns() -> None:
    """The operating guide's lead-nurturing sequence as a draft, and a finished invitation
    campaign with its results (ledger rows and tracking events), so that the campaign pages
    and the dashboard have something to show."""
    import random
    from datetime import timedelta

    from sqlalchemy import select

    from portal.audience.models import ContactConsent, ContactEvent, Segment
    from portal.auth.models import User
    from portal.campaigns import service
    from portal.campaigns.models import Campaign, CampaignStatus
    from portal.content.models import Asset, AssetVersion, VersionStatus
    from portal.delivery.models import Delivery, DeliveryStatus
    from portal.extensions import db
    from portal.models_base import utcnow

    if db.session.scalar(select(Campaign.id).limit(1)):
        return
    manager = db.session.scalar(select(User).where(User.email == "manager@example.com"))
    version_id = db.session.scalar(
        select(AssetVersion.id).join(Asset).where(Asset.kind == "email", AssetVersion.status == VersionStatus.APPROVED)
    )
    segment_id = db.session.scalar(select(Segment.id).limit(1))
    if manager is None or version_id is None or segment_id is None:
        return
    nurture = service.create_campaign(
        manager, {"name": "线索培育邮件序列", "segment_id": segment_id, "goal_metric": "click_rate", "goal_target": 8}
    )
    email = {"channel": "email", "content_version_id": version_id}
    service.add_step(manager, nurture.id, "message", **email)
    service.add_step(manager, nurture.id, "delay", {"days": 2, "hours": 0, "relative_to": "previous"})
    branch = service.add_step(manager, nurture.id, "branch", {"condition": "clicked", "window_days": 3})
    service.add_step(manager, nurture.id, "action", {"type": "notify_owner"}, parent_id=branch.id, branch="yes")
    service.add_step(manager, nurture.id, "message", parent_id=branch.id, branch="no", **email)
    service.add_step(manager, nurture.id, "delay", {"days": 4, "hours": 0, "relative_to": "previous"})
    service.add_step(manager, nurture.id, "message", **email)

    subscribers = Segment(
        name="全部邮件订阅客户",
        rules={"op": "and", "items": [{"field": "consent.email", "operator": "eq", "value": "granted"}]},
        created_by_id=manager.id,
    )
    db.session.add(subscribers)
    db.session.flush()
    sent = service.create_campaign(manager, {"name": "春季新品发布会邀请", "segment_id": subscribers.id})
    step = service.add_step(manager, sent.id, "message", **email)
    rng = random.Random(7)  # noqa: S311 - demo figures, not secrets
    now = utcnow()
    consented = db.session.scalars(
        select(ContactConsent.contact_id).where(ContactConsent.channel == "email", ContactConsent.status == "granted")
    ).all()
    for contact_id in consented:
        bounced = rng.random() < 0.02
        sent_at = now - timedelta(days=10, minutes=rng.randint(0, 600))
        delivery = Delivery(
            campaign_id=sent.id,
            step_id=step.id,
            contact_id=contact_id,
            channel="email",
            content_version_id=version_id,
            status=DeliveryStatus.BOUNCED if bounced else DeliveryStatus.SENT,
            due_at=sent_at,
            attempts=1,
            sent_at=None if bounced else sent_at,
            created_at=sent_at,
        )
        db.session.add(delivery)
        db.session.flush()
        if bounced or rng.random() > 0.45:
            continue
        opened = sent_at + timedelta(hours=rng.randint(1, 72))
        db.session.add(
            ContactEvent(
                contact_id=contact_id,
                kind="email_open",
                occurred_at=opened,
                properties={"delivery_id": delivery.id},
                source="tracking",
            )
        )
        delivery.opened_at = opened  # as the tracking endpoint writes it
        if rng.random() < 0.35:
            delivery.clicked_at = opened + timedelta(minutes=3)
            db.session.add(
                ContactEvent(
                    contact_id=contact_id,
                    kind="email_click",
                    occurred_at=opened + timedelta(minutes=3),
                    properties={"delivery_id": delivery.id, "url": "https://www.example.com/launch"},
                    source="tracking",
                )
            )
    sent.status = CampaignStatus.COMPLETED
    sent.started_at = now - timedelta(days=10, hours=1)
    sent.finished_at = now - timedelta(days=9)
    db.session.commit()


# Run in this order; each one must be safe to run again on a database that has its data.
DEMO_LOADERS: list[Callable[[], None]] = [
    ensure_builtin_roles,
    demo_sso_mapping,
    demo_people,
    demo_content,
    demo_audience,
    demo_campaigns,
]


def load_demo_data() -> None:
    for loader in DEMO_LOADERS:
        loader()
