import pytest

from portal.auth.models import User
from portal.extensions import db

GOOD_HTML = (
    '<p>{{ contact.name | default("客户") }}，您好！</p>'
    '<p>春季新品发布会邀请您参加。<a href="https://www.example.com/spring">了解详情</a></p>'
    '<img src="https://www.example.com/banner.png" alt="春季新品">'
    '<p><a href="{{ unsubscribe_url }}">退订</a></p>'
)


@pytest.fixture
def people(app, make_user):
    """An author (operations specialist), a reviewer, a manager and an analyst."""
    return {
        "author": make_user("operations_specialist", name="李运营"),
        "reviewer": make_user("reviewer", name="张审核"),
        "manager": make_user("marketing_manager", name="王经理"),
        "analyst": make_user("data_analyst", name="陈分析"),
    }


def user(user_id: int) -> User:
    return db.session.get(User, user_id)


@pytest.fixture
def email_draft(app, people):
    """A saved email draft by the author, ready to submit. Returns the version id."""
    from portal.content import service

    with app.app_context():
        asset = service.create_asset(user(people["author"]), "email", "春季新品发布会邀请", ["新品"])
        version = service.save_draft(
            user(people["author"]),
            asset.latest.id,
            {"subject": "春季新品发布会邀请", "preheader": "3 月 18 日，上海", "html_body": GOOD_HTML},
        )
        return version.id
