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
            "sms_text": "【示例科技】{{ contact.name | default('您') }}好，春季新品发布会明天 14:00 开始，期待您的到来。回T退订"
        },
    )
    service.submit_for_review(author, sms.latest.id)


# Run in this order; each one must be safe to run again on a database that has its data.
DEMO_LOADERS: list[Callable[[], None]] = [
    ensure_builtin_roles,
    demo_sso_mapping,
    demo_people,
    demo_content,
]


def load_demo_data() -> None:
    for loader in DEMO_LOADERS:
        loader()
