"""Building blocks for tests and benchmarks that need a campaign ready to send: approved
content made through the content service, contacts inserted in bulk, and a campaign
scheduled to start now. Call inside an app context."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select

from portal.audience.models import ConsentStatus, Contact, ContactConsent, Segment
from portal.auth.models import User
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep
from portal.extensions import db
from portal.models_base import utcnow

DEFAULT_HTML = (
    '<html><body><p>{{ contact.name | default("客户") }}，您好！</p>'
    '<p><a href="https://www.example.com/product?utm_source=email">查看新品</a></p>'
    '<p><a href="{{ unsubscribe_url }}">退订</a></p></body></html>'
)


def people(make_user) -> dict[str, User]:
    ids = {role: make_user(role) for role in ("operations_specialist", "reviewer", "marketing_manager")}
    return {role: db.session.get(User, user_id) for role, user_id in ids.items()}


def approved_content(author: User, reviewer: User, name: str, fields: dict[str, str], kind: str = "email") -> int:
    """An approved version made the way people make one: draft, review, approval."""
    from portal.content import service as content

    asset = content.create_asset(author, kind, name)
    content.save_draft(author, asset.latest.id, fields)
    content.submit_for_review(author, asset.latest.id)
    content.approve(reviewer, asset.latest.id)
    return asset.latest.id


def approved_email(
    author: User, reviewer: User, name: str = "新品发布", subject: str = "新品上市", html: str = ""
) -> int:
    return approved_content(
        author,
        reviewer,
        name,
        {"subject": subject, "html_body": html or DEFAULT_HTML, "text_body": "{{ contact.name }}，您好"},
    )


def add_contacts(count: int, *, prefix: str = "c", channels: tuple[str, ...] = ("email",), **fields: Any) -> list[int]:
    """`count` contacts <prefix><n>@example.org with consent on `channels`, in bulk."""
    start = (db.session.scalar(select(func.count()).select_from(Contact)) or 0) + 1
    now = utcnow()
    rows = [
        {
            "email": f"{prefix}{start + n}@example.org",
            "mobile": f"+86139{start + n:08d}",
            "name": f"客户{start + n}",
            "province": "上海市",
            "lifecycle_stage": "growing",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        for n in range(count)
    ]
    ids = list(db.session.scalars(insert(Contact).returning(Contact.id, sort_by_parameter_order=True), rows))
    consents = [
        {"contact_id": i, "channel": channel, "status": ConsentStatus.GRANTED, "source": "test", "recorded_at": now}
        for i in ids
        for channel in channels
    ]
    if consents:
        db.session.execute(insert(ContactConsent), consents)
    db.session.commit()
    return ids


def segment_of(contact_ids: list[int] | None = None, name: str = "测试受众") -> int:
    """A segment: everyone in 上海市 (what add_contacts makes)."""
    segment = Segment(
        name=name, rules={"op": "and", "items": [{"field": "province", "operator": "eq", "value": "上海"}]}
    )
    db.session.add(segment)
    db.session.commit()
    return segment.id


def scheduled_campaign(
    owner: User, segment_id: int, steps: list[dict[str, Any]], *, throttle: int = 1_000_000, **fields: Any
) -> int:
    """A campaign scheduled to start now with `steps` on its main path (each a dict of
    CampaignStep fields; "children": {"yes": [...], "no": [...]} for a branch). The publish
    gate is tested on its own; here the campaign is simply scheduled."""
    campaign = Campaign(
        name=fields.pop("name", "测试活动"),
        owner_id=owner.id,
        segment_id=segment_id,
        throttle_per_minute=throttle,
        window_start="00:00",
        window_end="00:00",
        status=CampaignStatus.SCHEDULED,
        scheduled_at=utcnow(),
        **fields,
    )
    db.session.add(campaign)
    db.session.flush()

    def add(specs: list[dict[str, Any]], parent_id: int | None = None, branch: str | None = None) -> None:
        for position, spec in enumerate(specs):
            spec = dict(spec)
            children = spec.pop("children", {})
            step = CampaignStep(campaign_id=campaign.id, parent_id=parent_id, branch=branch, position=position, **spec)
            db.session.add(step)
            db.session.flush()
            for side, child_specs in children.items():
                add(child_specs, step.id, side)

    add(steps)
    db.session.commit()
    return campaign.id
