"""Everyday management of contacts, tags, tag rules and segments, through the pages."""

import csv
import io

from sqlalchemy import select

from portal.audience.models import (
    Contact,
    ContactConsent,
    ContactEvent,
    ContactTag,
    ScoringRule,
    Segment,
    Tag,
    TagRule,
)
from portal.audit import AuditEvent
from portal.extensions import db
from tests.factories import add_contacts


def _contact(app, **fields) -> int:
    with app.app_context():
        return add_contacts(1, **fields)[0]


def _audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_editing_a_contact_changes_its_fields_and_owner_and_is_audited(app, client, login_as, make_user):
    login_as("operations_specialist")
    owner_id = make_user("marketing_manager", name="王经理")
    contact_id = _contact(app)
    response = client.post(
        f"/audience/contacts/{contact_id}/edit",
        data={
            "email": "new@example.org",
            "mobile": "13800138000",
            "name": "张三",
            "province": "广东",
            "city": "深圳市",
            "company": "云启",
            "industry": "零售",
            "company_size": "50-200",
            "owner_id": str(owner_id),
        },
    )
    assert response.status_code == 303
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        assert (contact.email, contact.mobile, contact.province, contact.city, contact.owner_id) == (
            "new@example.org",
            "+8613800138000",
            "广东省",
            "深圳",
            owner_id,
        )
    assert {"contact.updated", "contact.owner_changed"} <= set(_audit_actions(app))
    page = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "联系人已保存。" in page and "王经理" in page


def test_custom_fields_are_changed_added_and_removed_on_the_edit_page(app, client, login_as):
    login_as("operations_specialist")
    contact_id = _contact(app)
    with app.app_context():
        contact = db.session.get(Contact, contact_id)
        contact.attributes = {"会员等级": "金卡", "积分": 1200, "旧字段": "x"}
        email = contact.email
        db.session.commit()
    form = client.get(f"/audience/contacts/{contact_id}/edit").get_data(as_text=True)
    assert "自定义字段" in form and 'value="会员等级"' in form and 'value="1200"' in form
    response = client.post(
        f"/audience/contacts/{contact_id}/edit",
        data={
            "email": email,
            "owner_id": "",
            "attr_name": ["会员等级", "积分", "旧字段", "来源渠道"],
            "attr_value": ["白金卡", "1200", "", "展会"],
        },
    )
    assert response.status_code == 303
    with app.app_context():
        # The unchanged number stays a number; the cleared field is gone; the new one is kept.
        assert db.session.get(Contact, contact_id).attributes == {
            "会员等级": "白金卡",
            "积分": 1200,
            "来源渠道": "展会",
        }
        details = db.session.scalars(
            select(AuditEvent.details).where(AuditEvent.action == "contact.updated").order_by(AuditEvent.id.desc())
        ).first()
        assert [f for f in details["fields"] if f.startswith("attr:")] == [
            "attr:会员等级",
            "attr:旧字段",
            "attr:来源渠道",
        ]
    timeline = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "白金卡" in timeline


def test_a_custom_field_named_twice_is_refused_and_what_was_typed_stays(app, client, login_as):
    login_as("operations_specialist")
    contact_id = _contact(app)
    with app.app_context():
        email = db.session.get(Contact, contact_id).email
    response = client.post(
        f"/audience/contacts/{contact_id}/edit",
        data={"email": email, "owner_id": "", "attr_name": ["行业细分", "行业细分"], "attr_value": ["零售", "快消"]},
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "字段“行业细分”出现了两次" in page and 'value="快消"' in page
    with app.app_context():
        assert not db.session.get(Contact, contact_id).attributes


def test_an_email_another_contact_has_is_refused_with_a_chinese_sentence(app, client, login_as):
    login_as("operations_specialist")
    first, second = (_contact(app), _contact(app))
    with app.app_context():
        taken = db.session.get(Contact, first).email
    response = client.post(f"/audience/contacts/{second}/edit", data={"email": taken, "owner_id": ""})
    assert response.status_code == 422
    assert f"已有使用此邮件地址或手机号的联系人（#{first}）" in response.get_data(as_text=True)


def test_consent_changed_by_hand_records_who_when_and_the_history(app, client, login_as):
    user_id = login_as("operations_specialist", email="li@example.com")
    contact_id = _contact(app, email="c@example.org")
    response = client.post(f"/audience/contacts/{contact_id}/consent", data={"channel": "sms", "status": "granted"})
    assert response.status_code == 303
    with app.app_context():
        row = db.session.get(ContactConsent, (contact_id, "sms"))
        assert (row.status, row.source) == ("granted", "manual:li@example.com")
        history = db.session.scalars(select(ContactEvent).where(ContactEvent.kind == "consent_change")).all()
        assert [(e.properties["channel"], e.properties["from"], e.properties["to"]) for e in history] == [
            ("sms", "none", "granted")
        ]
        audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "contact.consent_changed"))
        assert audit.actor_id == user_id
    page = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "由 li@example.com 手工录入" in page and "短信：未同意 → 已同意" in page


def test_an_offline_activity_is_counted_by_a_scoring_rule(app, client, login_as):
    login_as("operations_specialist")
    contact_id = _contact(app)
    with app.app_context():
        db.session.add(ScoringRule(label="展会到访", event_kind="trade_show", points=15))
        db.session.commit()
        before = db.session.get(Contact, contact_id).score
    response = client.post(
        f"/audience/contacts/{contact_id}/activities",
        data={"kind": "trade_show", "occurred_at": "2026-03-18T10:30", "note": "上海展会 A3 展台"},
    )
    assert response.status_code == 303
    with app.app_context():
        assert db.session.get(Contact, contact_id).score == before + 15
    page = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "展会接触" in page and "上海展会 A3 展台" in page and "+15" in page and "“展会到访”" in page


def test_a_note_lands_on_the_timeline_and_an_empty_one_is_refused(app, client, login_as):
    login_as("operations_specialist")
    contact_id = _contact(app)
    assert client.post(f"/audience/contacts/{contact_id}/notes", data={"text": "  "}).status_code == 303
    assert "请先填写备注内容。" in client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    client.post(f"/audience/contacts/{contact_id}/notes", data={"text": "客户希望下周回电"})
    page = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "客户希望下周回电" in page


def test_the_contact_list_sorts_by_a_column_and_filters_by_segment_and_consent(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        low, high = add_contacts(2, channels=())
        db.session.get(Contact, low).score, db.session.get(Contact, high).score = 10, 90
        granted = add_contacts(1, channels=("sms",), province="广东省")[0]
        db.session.add(
            Segment(name="广东", rules={"items": [{"field": "province", "operator": "eq", "value": "广东"}]})
        )
        db.session.commit()
        segment_id = db.session.scalar(select(Segment.id))
    page = client.get("/audience/contacts?sort=-score").get_data(as_text=True)
    assert page.index(f'/audience/contacts/{high}"') < page.index(f'/audience/contacts/{low}"')
    page = client.get("/audience/contacts?sort=score").get_data(as_text=True)
    assert page.index(f'/audience/contacts/{low}"') < page.index(f'/audience/contacts/{high}"')
    by_segment = client.get(f"/audience/contacts?segment={segment_id}").get_data(as_text=True)
    assert f'/audience/contacts/{granted}"' in by_segment and f'/audience/contacts/{low}"' not in by_segment
    by_consent = client.get("/audience/contacts?consent=sms:granted").get_data(as_text=True)
    assert f'/audience/contacts/{granted}"' in by_consent and f'/audience/contacts/{high}"' not in by_consent


def test_bulk_tag_and_untag_act_on_the_ticked_contacts(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        ids = add_contacts(3)
    response = client.post("/audience/contacts/bulk", data={"action": "tag", "tag": "展会客户", "contact": ids[:2]})
    assert response.status_code == 303
    with app.app_context():
        tag = db.session.scalar(select(Tag).where(Tag.name == "展会客户"))
        tagged = set(db.session.scalars(select(ContactTag.contact_id).where(ContactTag.tag_id == tag.id)))
    assert tagged == set(ids[:2])
    client.post("/audience/contacts/bulk", data={"action": "untag", "tag": "展会客户", "contact": [ids[0]]})
    with app.app_context():
        assert set(db.session.scalars(select(ContactTag.contact_id).where(ContactTag.tag_id == tag.id))) == {ids[1]}
    assert "已从 1 位联系人身上移除标签。" in client.get("/audience/contacts").get_data(as_text=True)


def test_bulk_action_above_a_thousand_contacts_needs_the_high_risk_permission_and_a_second_factor(
    app, client, login_as, step_up
):
    with app.app_context():
        add_contacts(1001)
    login_as("operations_specialist")  # no AUDIENCE_BULK_EDIT
    client.post("/audience/contacts/bulk", data={"action": "tag", "tag": "全部"})
    assert "需要批量操作权限" in client.get("/audience/contacts").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Tag).where(Tag.name == "全部")) is None
    login_as("marketing_manager")
    asked = client.post(
        "/audience/contacts/bulk", data={"action": "tag", "tag": "全部"}, headers={"Referer": "/audience/contacts"}
    )
    assert asked.status_code == 302 and asked.headers["Location"].startswith("/auth/sso?reauth=1")
    assert "next=/audience/contacts" in asked.headers["Location"]
    with app.app_context():
        assert db.session.scalar(select(Tag).where(Tag.name == "全部")) is None
    step_up()
    client.post("/audience/contacts/bulk", data={"action": "tag", "tag": "全部"})
    with app.app_context():
        tag = db.session.scalar(select(Tag).where(Tag.name == "全部"))
        assert len(db.session.scalars(select(ContactTag).where(ContactTag.tag_id == tag.id)).all()) == 1001


def test_exporting_a_selection_gives_a_csv_excel_reads_with_chinese_headers(app, client, login_as):
    login_as("marketing_manager")
    with app.app_context():
        ids = add_contacts(2)
    response = client.post("/audience/contacts/bulk", data={"action": "export", "contact": ids})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    body = response.get_data()
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0][:4] == ["编号", "姓名", "邮件", "手机号"]
    assert {int(r[0]) for r in rows[1:]} == set(ids) and rows[1][-1] == "成长期"
    assert "contacts.exported" in _audit_actions(app)


def test_tags_are_created_renamed_merged_and_deleted_and_segments_follow(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        a, b = add_contacts(2)
    client.post("/audience/tags/new", data={"name": "高意向"})
    client.post("/audience/tags/new", data={"name": "高意向"})
    assert "已有名为“高意向”的标签。" in client.get("/audience/tags").get_data(as_text=True)
    with app.app_context():
        high = db.session.scalar(select(Tag).where(Tag.name == "高意向"))
        other = Tag(name="热门")
        db.session.add(other)
        db.session.flush()
        db.session.add_all([ContactTag(contact_id=a, tag_id=high.id), ContactTag(contact_id=b, tag_id=other.id)])
        db.session.add(
            Segment(name="有标签", rules={"items": [{"field": "tag", "operator": "has", "value": "高意向"}]})
        )
        db.session.commit()
        high_id, other_id = high.id, other.id
    client.post(f"/audience/tags/{high_id}/rename", data={"name": "高意向客户"})
    with app.app_context():
        assert db.session.scalar(select(Segment.rules))["items"][0]["value"] == "高意向客户"
    client.post(f"/audience/tags/{other_id}/merge", data={"into": high_id})
    with app.app_context():
        assert db.session.get(Tag, other_id) is None
        assert set(db.session.scalars(select(ContactTag.contact_id).where(ContactTag.tag_id == high_id))) == {a, b}
    page = client.get("/audience/tags").get_data(as_text=True)
    assert "标签已合并：1 位联系人获得了该标签。" in page and "<td>2</td>" in page
    client.post(f"/audience/tags/{high_id}/delete")
    with app.app_context():
        assert db.session.get(Tag, high_id) is None and not db.session.scalars(select(ContactTag)).all()
    assert {"tag.created", "tag.renamed", "tag.merged", "tag.deleted"} <= set(_audit_actions(app))


def test_destructive_actions_on_tags_ask_first_and_say_what_is_lost(app, client, login_as):
    login_as("operations_specialist")
    client.post("/audience/tags/new", data={"name": "旧标签"})
    page = client.get("/audience/tags").get_data(as_text=True)
    assert 'hx-confirm="删除标签“旧标签”？将从 0 位联系人身上移除' in page
    assert 'hx-disabled-elt="find button"' in page


def test_tag_rules_read_as_sentences_and_can_be_disabled_and_deleted(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        add_contacts(2)
        db.session.add(
            Segment(
                name="上海",
                rules={
                    "op": "and",
                    "items": [
                        {"field": "province", "operator": "eq", "value": "上海市"},
                        {"field": "score", "operator": "gte", "value": 50},
                    ],
                },
            )
        )
        db.session.commit()
        segment_id = db.session.scalar(select(Segment.id))
    client.post("/audience/tags", data={"tag": "上海客户", "segment_id": str(segment_id)})
    page = client.get("/audience/tags").get_data(as_text=True)
    assert "省份 是 “上海市”，并且评分 至少 “50”" in page and '"op"' not in page and "province" not in page
    with app.app_context():
        rule_id = db.session.scalar(select(TagRule.id))
    client.post(f"/audience/tag-rules/{rule_id}/enabled", data={"enabled": "0"})
    with app.app_context():
        assert db.session.get(TagRule, rule_id).enabled is False
    client.post(f"/audience/tag-rules/{rule_id}/delete")
    with app.app_context():
        assert db.session.get(TagRule, rule_id) is None
        assert len(db.session.scalars(select(ContactTag)).all()) == 2  # the tags it gave stay
    assert {"tag_rule.disabled", "tag_rule.deleted"} <= set(_audit_actions(app))


def test_the_segment_list_shows_counts_and_conditions_and_segments_can_be_deleted(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        add_contacts(3)
        db.session.add(
            Segment(name="上海", rules={"items": [{"field": "province", "operator": "eq", "value": "上海"}]})
        )
        db.session.commit()
        segment_id = db.session.scalar(select(Segment.id))
    page = client.get("/audience/segments").get_data(as_text=True)
    assert f'<a href="/audience/contacts?segment={segment_id}">3</a>' in page and "省份 是 “上海”" in page
    assert client.post(f"/audience/segments/{segment_id}/delete").status_code == 303
    with app.app_context():
        assert db.session.get(Segment, segment_id) is None


def test_the_segment_builder_offers_only_fitting_operators_and_no_error_before_a_value(app, client, login_as):
    login_as("operations_specialist")
    page = client.get("/audience/segments/new").get_data(as_text=True)
    assert "flash-error" not in page
    response = client.post(
        "/audience/segments/builder",
        data={"r.op": "and", "r.0.field": "tag", "r.0.operator": "eq", "r.0.value": "", "action": "refresh:r"},
    )
    fragment = response.get_data(as_text=True)
    operators = fragment[fragment.index('name="r.0.operator"') :].split("</select>")[0]
    assert 'value="has"' in operators and 'value="has_not"' in operators and 'value="contains"' not in operators
    assert "flash-error" not in fragment
    preview = client.post(
        "/audience/segments/builder", data={"r.op": "and", "r.0.field": "region", "r.0.operator": "eq", "r.0.value": ""}
    ).get_data(as_text=True)
    assert "flash-error" not in preview and "segment-count" in preview
