"""Tag rules, lead scoring and lifecycle stages."""

from datetime import timedelta

from sqlalchemy import select

from portal.audience import lifecycle, scoring, service, tag_rules
from portal.audience.models import Contact, ContactEvent, ContactTag, Tag
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import Notification
from tests.audience.conftest import actor


def make_contact(**fields) -> int:
    contact = Contact(email=fields.pop("email", None) or f"c{utcnow().timestamp()}@example.com", **fields)
    db.session.add(contact)
    db.session.commit()
    return contact.id


def test_tag_rule_tags_matching_contacts_and_removes_its_tag_when_they_stop(app, manager):
    with app.app_context():
        south = make_contact(email="s@example.com", province="广东省", industry="科技")
        other = make_contact(email="o@example.com", province="北京市", industry="科技")
        rules = {
            "op": "and",
            "items": [
                {"field": "region", "operator": "eq", "value": "华南"},
                {"field": "industry", "operator": "eq", "value": "科技"},
            ],
        }
        rule = tag_rules.save_rule(actor(manager), "华南科技行业客户", rules)
        assert tag_rules.evaluate(rule.id) == (1, 0)
        assert tag_rules.evaluate(rule.id) == (0, 0)  # idempotent
        tagged = set(db.session.scalars(select(ContactTag.contact_id)))
        assert tagged == {south}
        db.session.get(Contact, south).industry = "零售"
        service.add_tag(actor(manager), other, "华南科技行业客户")  # by hand: stays
        db.session.commit()
        assert tag_rules.evaluate(rule.id) == (0, 1)
        assert set(db.session.scalars(select(ContactTag.contact_id))) == {other}


def test_scoring_follows_the_table_and_crossing_80_makes_an_mql(app, manager):
    with app.app_context():
        contact_id = make_contact(email="lead@example.com", name="潜在客户", score=60, owner_id=manager)
        service.record_event(contact_id, "download", properties={"asset": "白皮书"})  # +5 -> 65
        service.record_event(contact_id, "webinar_attended")  # +10 -> 75
        service.record_event(contact_id, "email_click", properties={"url": "https://x.com/product"})  # +0
        assert db.session.get(Contact, contact_id).score == 75
        service.record_event(contact_id, "email_click", properties={"url": "https://x.com/pricing"})  # +8 -> 83
        contact = db.session.get(Contact, contact_id)
        assert contact.score == 83
        assert "MQL" in set(db.session.scalars(select(Tag.name).join(ContactTag)))
        kinds = [e.kind for e in db.session.scalars(select(ContactEvent).where(ContactEvent.contact_id == contact_id))]
        assert kinds.count("mql") == 1
        note = db.session.scalar(select(Notification).where(Notification.user_id == manager))
        assert "MQL" in note.message
        service.record_event(contact_id, "sales_consultation")  # +15, already over: no second MQL
        kinds = [e.kind for e in db.session.scalars(select(ContactEvent).where(ContactEvent.contact_id == contact_id))]
        assert kinds.count("mql") == 1


def test_scoring_an_event_twice_changes_nothing(app):
    with app.app_context():
        contact_id = make_contact(email="twice@example.com", score=60)
        event_id = service.record_event(contact_id, "sales_consultation")
        assert scoring.score_event(event_id) == 0
        assert db.session.get(Contact, contact_id).score == 75


def test_lifecycle_stages_from_purchases_and_inactivity(app):
    with app.app_context():
        now = utcnow()
        fresh = make_contact(email="new@example.com", created_at=now - timedelta(days=3), last_activity_at=now)
        growing = make_contact(email="g@example.com", last_activity_at=now)
        stable = make_contact(email="st@example.com", last_activity_at=now)
        dormant = make_contact(
            email="d@example.com", created_at=now - timedelta(days=400), last_activity_at=now - timedelta(days=120)
        )
        for contact_id, purchases in ((growing, 2), (stable, 3), (dormant, 5)):
            for _ in range(purchases):
                db.session.add(
                    ContactEvent(contact_id=contact_id, kind="purchase", occurred_at=now - timedelta(days=150))
                )
        db.session.commit()
        assert lifecycle.recompute_stages() == 3
        stages = {c.email: c.lifecycle_stage for c in db.session.scalars(select(Contact))}
        assert stages == {
            "new@example.com": "new",
            "g@example.com": "growing",
            "st@example.com": "stable",
            "d@example.com": "dormant",
        }
        assert lifecycle.recompute_stages() == 0  # idempotent
        changes = db.session.scalars(select(ContactEvent).where(ContactEvent.kind == "stage_change")).all()
        assert {e.properties["to"] for e in changes} == {"growing", "stable", "dormant"}
        assert fresh
