"""Writing emails from blocks: saving, live checks that point at blocks, templates, and the
SMS counter."""

import copy
import json

import pytest

from portal.content import blocks, service
from portal.content.models import AssetVersion
from portal.extensions import db
from tests.content.conftest import user


def block_email(app, people, name="积木邮件"):
    with app.app_context():
        asset = service.create_asset(user(people["author"]), "email", name, start_from="blocks")
        return asset.latest.id


def test_a_new_block_email_renders_to_html_and_text_with_the_unsubscribe_link(app, people):
    version_id = block_email(app, people)
    with app.app_context():
        version = db.session.get(AssetVersion, version_id)
        assert version.blocks["sections"]
        assert "{{ unsubscribe_url }}" in version.html_body
        assert "退订 ({{ unsubscribe_url }})" in version.text_body


def test_saving_blocks_stores_the_document_and_renders_it(app, people):
    version_id = block_email(app, people)
    with app.app_context():
        document = copy.deepcopy(db.session.get(AssetVersion, version_id).blocks)
        document["sections"][0]["blocks"][0]["text"] = "{{ contact.name | default('客户') }}，春季新品到了"
        service.save_draft(user(people["author"]), version_id, {"subject": "春季新品", "blocks": json.dumps(document)})
        db.session.expire_all()  # read back what was stored
        version = db.session.get(AssetVersion, version_id)
        assert version.blocks["sections"][0]["blocks"][0]["text"].endswith("春季新品到了")
        assert "春季新品到了" in version.html_body
        assert version.text_body.startswith("{{ contact.name | default('客户') }}，春季新品到了")


def test_saving_without_blocks_switches_to_hand_written_html(app, people):
    version_id = block_email(app, people)
    with app.app_context():
        html = '<p>手写</p><a href="{{ unsubscribe_url }}">退订</a>'
        service.save_draft(user(people["author"]), version_id, {"subject": "s", "html_body": html})
        version = db.session.get(AssetVersion, version_id)
        assert version.blocks is None and version.html_body == html


def test_a_malformed_document_is_refused_and_nothing_changes(app, people):
    version_id = block_email(app, people)
    with app.app_context():
        before = db.session.get(AssetVersion, version_id).html_body
        with pytest.raises(service.ContentError) as refused:
            service.save_draft(user(people["author"]), version_id, {"subject": "s", "blocks": "{not json"})
        assert refused.value.code == "blocks_invalid"
        db.session.rollback()
        assert db.session.get(AssetVersion, version_id).html_body == before


def test_findings_point_at_the_block_at_fault(app, people):
    version_id = block_email(app, people)
    with app.app_context():
        document = copy.deepcopy(db.session.get(AssetVersion, version_id).blocks)
        image = {**blocks.new_block("image"), "src": "https://www.example.com/a.png", "alt": ""}
        document["sections"][0]["blocks"].append(image)
        button = next(b for b in document["sections"][0]["blocks"] if b["kind"] == "button")
        button["href"] = "https://"
        document = blocks.clean_document(document)
        fields = {"subject": "主题", "html_body": blocks.render_html(document), "text_body": ""}
        findings = {f.code: f for f in service.check_fields("email", fields, document)}
        assert findings["image_alt"].block == image["id"]
        assert findings["link_no_address"].block == button["id"]


def test_subject_length_is_measured_on_the_subject_people_see(app, people):
    with app.app_context():
        fields = {"html_body": '<a href="{{ unsubscribe_url }}">退订</a>', "text_body": ""}
        short_source = {**fields, "subject": "{{ contact.company * 4 }}！"}  # 25 characters of source
        codes = [f.code for f in service.check_fields("email", short_source)]
        assert "subject_long" in codes  # rendered: 上海云启科技有限公司 four times, 41 characters
        long_source = {**fields, "subject": '{{ contact.name | default("尊敬的客户朋友们大家好") }}，新品'}
        assert "subject_long" not in [f.code for f in service.check_fields("email", long_source)]


@pytest.mark.parametrize("key", ["newsletter", "webinar", "whitepaper", "nurture", "reengagement"])
def test_start_from_each_portal_template(app, people, key):
    with app.app_context():
        asset = service.create_asset(user(people["author"]), "email", "模板邮件", start_from=f"builtin:{key}")
        version = asset.latest
        assert version.subject and version.blocks and "{{ unsubscribe_url }}" in version.html_body
        assert service.run_checks(version) is not None


def test_save_as_template_then_start_from_it_and_from_a_previous_message(app, people):
    version_id = block_email(app, people, "原始邮件")
    with app.app_context():
        author = user(people["author"])
        service.save_draft(
            author, version_id, {"subject": "原始主题", "blocks": db.session.get(AssetVersion, version_id).blocks}
        )
        template = service.save_as_template(author, version_id, "我的模板")
        assert (f"template:{template.id}", "我的模板") in service.templates_for("email")
        from_template = service.create_asset(author, "email", "新邮件", start_from=f"template:{template.id}")
        assert from_template.latest.subject == "原始主题"
        previous = db.session.get(AssetVersion, version_id).asset_id
        copied = service.create_asset(author, "email", "复制", start_from=f"asset:{previous}")
        assert copied.latest.blocks == db.session.get(AssetVersion, version_id).blocks
        with pytest.raises(service.ContentError):
            service.create_asset(author, "sms", "错配", start_from=f"template:{template.id}")


def test_analysts_cannot_save_templates(app, people):
    version_id = block_email(app, people)
    with app.app_context(), pytest.raises(service.ContentError):
        service.save_as_template(user(people["analyst"]), version_id, "x")


def test_the_block_editor_steps_and_the_live_preview_through_the_pages(app, client, login_as):
    login_as("operations_specialist")
    new = client.post("/content/new", data={"kind": "email", "name": "页面积木", "start_from": "blocks"})
    edit_url = new.headers["Location"]
    page = client.get(edit_url).get_data(as_text=True)
    assert 'id="block-editor"' in page and "添加积木" in page
    version_id = int(edit_url.rstrip("/edit").rsplit("/", 1)[1])
    with app.app_context():
        document = db.session.get(AssetVersion, version_id).blocks
    form = {"mode": "blocks", "subject": "主题", "name": "页面积木", "sample": "zh"}
    for section in document["sections"]:
        form[f"s.{section['id']}.columns"] = section["columns"]
        for block in section["blocks"]:
            for key, value in block.items():
                if key != "id":
                    form[f"b.{block['id']}.{key}"] = value
            form[f"b.{block['id']}.section"] = section["id"]
    first = document["sections"][0]["id"]
    step = client.post(
        f"/content/versions/{version_id}/blocks",
        data={**form, "op": f"add:{first}:0", f"add.{first}.0": "divider"},
        headers={"HX-Request": "true"},
    )
    assert step.status_code == 200 and "分隔线" in step.get_data(as_text=True)
    preview = client.post(f"/content/versions/{version_id}/preview", data=form).get_data(as_text=True)
    assert "自动检查" in preview and "有链接还没有填写地址" in preview  # the starter button's empty link
    assert "定位到积木" in preview


def test_the_sms_counter_includes_the_signature_and_the_opt_out_text(app, client, login_as):
    login_as("operations_specialist")
    app.config["SMS_SIGN_NAME"] = "示例科技"
    try:
        edit_url = client.post("/content/new", data={"kind": "sms", "name": "短信"}).headers["Location"]
        version_id = int(edit_url.rstrip("/edit").rsplit("/", 1)[1])
        text = "好" * 62 + "回T退订"  # 66 characters: one segment alone, two with 【示例科技】 (72)
        preview = client.post(f"/content/versions/{version_id}/preview", data={"sms_text": text}).get_data(as_text=True)
        assert "72 个字符" in preview and "计 2 条短信" in preview
    finally:
        app.config["SMS_SIGN_NAME"] = ""


def test_reviewers_see_which_blocks_changed_not_the_generated_html(app, people):
    version_id = block_email(app, people, "评审积木")
    with app.app_context():
        author, reviewer = user(people["author"]), user(people["reviewer"])
        document = copy.deepcopy(db.session.get(AssetVersion, version_id).blocks)  # not the stored one
        button = next(b for b in document["sections"][0]["blocks"] if b["kind"] == "button")
        button["href"] = "https://www.example.com/go"
        service.save_draft(author, version_id, {"subject": "评审", "blocks": document})
        service.submit_for_review(author, version_id)
        service.request_changes(reviewer, version_id, "标题写明日期")
        asset_id = db.session.get(AssetVersion, version_id).asset_id
        draft = service.new_draft_from(author, asset_id)
        document = copy.deepcopy(draft.blocks)
        document["sections"][0]["blocks"][0]["text"] = "3 月 18 日发布会"
        service.save_draft(author, draft.id, {"subject": "评审", "blocks": document})
        service.submit_for_review(author, draft.id)
        changes = service.review_changes(db.session.get(AssetVersion, draft.id))
        edited = [c for c in changes.block_changes if c.change == "changed"]
        assert [(c.kind, c.after) for c in edited] == [("heading", "3 月 18 日发布会")]
        assert not any("[html_body]" in line for _, line in changes.source)
        assert changes.changed


def test_wecom_preview_counts_characters_and_bytes_against_the_robots_limit(app, client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "wecom", "name": "企微"}).headers["Location"]
    version_id = int(edit_url.rstrip("/edit").rsplit("/", 1)[1])
    data = {"wecom_text": "新品上市" * 3, "wecom_format": "markdown"}
    preview = client.post(f"/content/versions/{version_id}/preview", data=data).get_data(as_text=True)
    assert "12 个字符 · 36 字节（企业微信消息上限 4096 字节）" in preview
    assert "自动检查" in preview  # the same live checks as email and SMS


def test_a_refused_save_keeps_the_blocks_as_typed(app, client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "email", "name": "拒绝", "start_from": "blocks"}).headers[
        "Location"
    ]
    form = {
        "mode": "blocks",
        "name": "拒绝",
        "subject": "主题",
        "action": "save",
        "s.s1.columns": "1",
        "b.b1.kind": "heading",
        "b.b1.section": "s1",
        "b.b1.text": "刚写的标题 {{ contact.nmae }}",
    }
    response = client.post(edit_url, data=form)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "contact.nmae" in page and 'value="刚写的标题 {{ contact.nmae }}"' in page
