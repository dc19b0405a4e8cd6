"""The segment compiler against answers worked out by hand on a small fixed population."""

from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.audience.models import Contact, ContactConsent, ContactEvent, ContactTag, Tag
from portal.audience.segments import SegmentRuleError, compile_rules, count_segment
from portal.extensions import db
from portal.models_base import utcnow

PEOPLE = [
    # name, province, industry, score, stage, tags, purchases (days ago), clicks (days ago, url), consent
    ("甲", "上海市", "科技", 85, "growing", ["高意向客户"], [10], [(2, "https://x.com/pricing")], "granted"),
    ("乙", "广东省", "科技", 70, "new", [], [], [(3, "https://x.com/product")], "granted"),
    ("丙", "广西壮族自治区", "零售", 60, "new", ["高意向客户"], [200], [], "withdrawn"),
    ("丁", "北京市", "科技", 90, "stable", [], [5, 6, 7], [(30, "https://x.com/pricing")], None),
    ("戊", "浙江省", "制造", 55, "dormant", [], [], [], "granted"),
]


@pytest.fixture
def population(app):
    with app.app_context():
        now = utcnow()
        tags = {}
        for number, (name, province, industry, score, stage, tag_names, purchases, clicks, consent) in enumerate(
            PEOPLE
        ):
            contact = Contact(
                name=name,
                email=f"p{number}@example.com",
                province=province,
                industry=industry,
                score=score,
                lifecycle_stage=stage,
                attributes={"职位": "总监" if number % 2 else "经理"},
            )
            db.session.add(contact)
            db.session.flush()
            for tag_name in tag_names:
                tags.setdefault(tag_name, Tag(name=tag_name))
                db.session.add(tags[tag_name])
                db.session.flush()
                db.session.add(ContactTag(contact_id=contact.id, tag_id=tags[tag_name].id))
            for days in purchases:
                db.session.add(
                    ContactEvent(contact_id=contact.id, kind="purchase", occurred_at=now - timedelta(days=days))
                )
            for days, url in clicks:
                db.session.add(
                    ContactEvent(
                        contact_id=contact.id,
                        kind="email_click",
                        occurred_at=now - timedelta(days=days),
                        properties={"url": url},
                    )
                )
            if consent:
                db.session.add(ContactConsent(contact_id=contact.id, channel="email", status=consent, source="test"))
        db.session.commit()


def names(app, rules):
    with app.app_context():
        ids = compile_rules(rules)
        return sorted(db.session.scalars(select(Contact.name).where(Contact.id.in_(ids))))


def cond(field, operator, value, **extra):
    return {"field": field, "operator": operator, "value": value, **extra}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({"op": "and", "items": [cond("region", "eq", "华南")]}, ["丙", "乙"]),
        ({"op": "and", "items": [cond("province", "eq", "上海")]}, ["甲"]),
        ({"op": "and", "items": [cond("region", "eq", "华南"), cond("industry", "eq", "科技")]}, ["乙"]),
        ({"op": "and", "items": [cond("tag", "has", "高意向客户")]}, ["丙", "甲"]),
        ({"op": "and", "items": [cond("tag", "has_not", "高意向客户")]}, ["丁", "乙", "戊"]),
        ({"op": "and", "items": [cond("score", "gte", 80)]}, ["丁", "甲"]),
        ({"op": "and", "items": [cond("score", "between", [60, 70])]}, ["丙", "乙"]),
        ({"op": "and", "items": [cond("lifecycle_stage", "eq", "new")]}, ["丙", "乙"]),
        ({"op": "and", "items": [cond("consent.email", "eq", "granted")]}, ["乙", "戊", "甲"]),
        ({"op": "and", "items": [cond("consent.email", "eq", "none")]}, ["丁"]),
        ({"op": "and", "items": [cond("event.purchase", "eq", 0, days=90)]}, ["丙", "乙", "戊"]),
        ({"op": "and", "items": [cond("event.purchase", "gte", 3)]}, ["丁"]),
        (
            {"op": "and", "items": [cond("event.email_click", "gte", 1, days=7, property="url", contains="pricing")]},
            ["甲"],
        ),
        ({"op": "and", "items": [cond("attributes.职位", "eq", "总监")]}, ["丁", "乙"]),
        ({"op": "or", "items": [cond("province", "eq", "北京"), cond("industry", "eq", "制造")]}, ["丁", "戊"]),
        (
            {
                "op": "and",
                "items": [
                    cond("industry", "eq", "科技"),
                    {"op": "or", "items": [cond("tag", "has", "高意向客户"), cond("score", "gte", 88)]},
                ],
            },
            ["丁", "甲"],
        ),
        (
            {"op": "and", "items": [{"op": "or", "not": True, "items": [cond("region", "eq", "华南")]}]},
            ["丁", "戊", "甲"],
        ),
        ({"op": "and", "items": []}, ["丁", "丙", "乙", "戊", "甲"]),
    ],
)
def test_compiler_matches_hand_computed_answers(app, population, rules, expected):
    assert names(app, rules) == expected


def test_three_condition_segment_is_one_query_and_counts(app, population):
    rules = {
        "op": "and",
        "items": [cond("region", "eq", "华东"), cond("tag", "has_not", "高意向客户"), cond("score", "gte", 50)],
    }
    with app.app_context():
        assert count_segment(rules) == 1  # 戊 (浙江); 甲 (上海) has the tag
        sql = str(compile_rules(rules))
        assert sql.count("SELECT") == 2  # the outer query and one EXISTS


@pytest.mark.parametrize(
    "bad",
    [
        {"op": "xor", "items": []},
        {"op": "and", "items": [cond("nonsense", "eq", 1)]},
        {"op": "and", "items": [cond("region", "eq", "火星")]},
        {"op": "and", "items": [cond("score", "gte", "many")]},
        {"op": "and", "items": [cond("event.teleport", "gte", 1)]},
        {"op": "and", "items": [cond("tag", "eq", "x")]},
    ],
)
def test_invalid_rules_are_refused_with_a_reason(app, bad):
    with app.app_context(), pytest.raises(SegmentRuleError):
        compile_rules(bad)


def test_builder_live_count_fragment(app, client, login_as, population):
    login_as("marketing_manager")
    form = {"name": "华南", "r.op": "and", "r.0.field": "region", "r.0.operator": "eq", "r.0.value": "华南"}
    html = client.post("/audience/segments/builder", data=form, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'id="segment-count">2<' in html and "<html" not in html
    added = client.post(
        "/audience/segments/builder", data={**form, "action": "add_group:r"}, headers={"HX-Request": "true"}
    ).get_data(as_text=True)
    assert 'name="r.1.op"' in added
    assert added.count('id="segment-count"') == 1  # the count beside it is refreshed out of band


def test_builder_page_has_one_live_count(app, client, login_as, population):
    login_as("marketing_manager")
    assert client.get("/audience/segments/new").get_data(as_text=True).count('id="segment-count"') == 1


def test_segment_is_saved_from_the_builder(app, client, login_as, population):
    login_as("marketing_manager")
    form = {"name": "高分客户", "r.op": "and", "r.0.field": "score", "r.0.operator": "gte", "r.0.value": "80"}
    response = client.post("/audience/segments/new", data=form)
    assert response.status_code == 303
    from portal.audience.models import Segment

    with app.app_context():
        segment = db.session.scalar(select(Segment))
        assert segment.rules == {"op": "and", "items": [{"field": "score", "operator": "gte", "value": 80}]}
        assert count_segment(segment.id) == 2


def test_the_region_follows_the_province_on_every_write(app, make_user):
    from portal.audience import service
    from tests.audience.conftest import actor

    with app.app_context():
        user = actor(make_user("marketing_manager"))
        contact = service.create_contact(user, {"email": "r@example.com", "province": "四川"})
        assert contact.region == "西南"
        service.update_contact(user, contact.id, {"province": "辽宁"})
        assert db.session.get(Contact, contact.id).region == "东北"
        assert count_segment({"op": "and", "items": [cond("region", "eq", "东北")]}) == 1
