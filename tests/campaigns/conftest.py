"""Shared campaign fixtures."""

import pytest

from portal.auth.models import User
from portal.extensions import db


@pytest.fixture
def setup(app, make_user):
    """A manager, an approved email and a draft email, and a non-empty segment."""
    from portal.audience.models import Contact, Segment
    from portal.content import service as content

    with app.app_context():
        author = db.session.get(User, make_user("operations_specialist"))
        reviewer = db.session.get(User, make_user("reviewer"))
        manager = db.session.get(User, make_user("marketing_manager"))
        html = '<p>{{ contact.name | default("客户") }}</p><a href="{{ unsubscribe_url }}">退订</a>'
        approved = content.create_asset(author, "email", "第1天：欢迎")
        content.save_draft(author, approved.latest.id, {"subject": "欢迎", "html_body": html})
        content.submit_for_review(author, approved.latest.id)
        content.approve(reviewer, approved.latest.id)
        draft = content.create_asset(author, "email", "第3天：产品介绍")
        db.session.add(Contact(email="c@example.com", province="上海市"))
        segment = Segment(
            name="上海", rules={"op": "and", "items": [{"field": "province", "operator": "eq", "value": "上海"}]}
        )
        db.session.add(segment)
        db.session.commit()
        return {"manager": manager.id, "approved": approved.latest.id, "draft": draft.latest.id, "segment": segment.id}
