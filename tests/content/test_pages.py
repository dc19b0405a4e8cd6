from sqlalchemy import select

from portal.content import service
from portal.content.models import Asset, AssetVersion
from portal.extensions import db
from tests.content.conftest import GOOD_HTML, user


def test_author_creates_edits_and_submits_through_the_pages(app, client, login_as):
    login_as("operations_specialist")
    response = client.post("/content/new", data={"kind": "email", "name": "五月活动", "tags": "促销, 华东"})
    assert response.status_code == 303
    edit_url = response.headers["Location"]
    form = {
        "name": "五月活动",
        "tags": "促销",
        "subject": "五月会员日",
        "preheader": "",
        "html_body": GOOD_HTML,
        "text_body": "",
        "wecom_format": "text",
    }
    assert client.post(edit_url, data={**form, "action": "save"}).status_code == 303
    response = client.post(edit_url, data={**form, "action": "submit"})
    assert response.status_code == 303
    with app.app_context():
        version = db.session.scalar(select(AssetVersion))
        assert version.status == "in_review" and version.asset.tags == ["促销"]


def test_submit_with_blocking_problems_shows_them_and_keeps_the_draft(app, client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "email", "name": "违规"}).headers["Location"]
    form = {
        "name": "违规",
        "subject": "国家级产品",
        "html_body": "<p>hi</p>",
        "wecom_format": "text",
        "action": "submit",
    }
    response = client.post(edit_url, data=form)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="checks"' in html and "国家级" in html


def test_broken_template_is_refused_with_its_line_on_the_page(client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "sms", "name": "短信"}).headers["Location"]
    response = client.post(
        edit_url, data={"name": "短信", "sms_text": "您好 {{ contact.name ", "wecom_format": "text", "action": "save"}
    )
    assert response.status_code == 422
    assert "短信内容，第 1 行：模板有语法错误" in response.get_data(as_text=True)


def test_live_preview_renders_unsaved_fields_as_the_sample_contact(app, client, login_as, people, email_draft):
    login_as("operations_specialist")
    with app.app_context():
        db.session.get(AssetVersion, email_draft).author_id  # noqa: B018
    response = client.post(
        f"/content/versions/{email_draft}/preview",
        data={"subject": "{{ contact.name }}，新品到了", "html_body": GOOD_HTML, "sample": "en"},
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert "Emily Chen，新品到了" in html
    assert 'sandbox=""' in html
    # The panel is re-rendered, as the author types, by a wrapper on the editor page that stays
    # in place (a panel replacing itself would lose the requests queued on it).
    editor = client.get(f"/content/versions/{email_draft}/edit").get_data(as_text=True)
    assert 'id="live-preview"' in editor and 'hx-trigger="input changed delay:400ms' in editor


def test_sms_preview_shows_the_segment_count(app, client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "sms", "name": "短信"}).headers["Location"]
    version_id = edit_url.split("/")[-2]
    html = client.post(f"/content/versions/{version_id}/preview", data={"sms_text": "中" * 71}).get_data(as_text=True)
    assert "71 个字符 · UCS-2 · 计 2 条短信" in html


def test_reviewer_sees_checks_links_diff_and_approves(app, client, login_as, people, email_draft):
    with app.app_context():
        author, reviewer = user(people["author"]), user(people["reviewer"])
        service.submit_for_review(author, email_draft)
        service.approve(reviewer, email_draft)
        asset_id = db.session.get(AssetVersion, email_draft).asset_id
        draft = service.new_draft_from(author, asset_id)
        service.save_draft(author, draft.id, {**draft.fields(), "subject": "春季新品发布会（更新）"})
        service.submit_for_review(author, draft.id)
        draft_id = draft.id
    login_as("reviewer")
    queue = client.get("/content/review").get_data(as_text=True)
    assert "春季新品发布会邀请 v2" in queue
    page = client.get(f"/content/{asset_id}?version={draft_id}").get_data(as_text=True)
    assert "https://www.example.com/spring" in page  # links shown with their destination
    # The rendered subject compared word by word with v1, inside the page's width.
    assert 'id="changes"' in page and "<del>邀请</del><ins>（更新）</ins>" in page
    assert client.post(f"/content/versions/{draft_id}/approve", data={"comment": "好"}).status_code == 303
    with app.app_context():
        assert db.session.get(AssetVersion, draft_id).status == "approved"


def test_list_filters_by_kind_status_and_tag(app, client, login_as, people, email_draft):
    with app.app_context():
        service.create_asset(user(people["author"]), "sms", "短信A", ["会员"])
    login_as("operations_specialist")
    assert "短信A" in client.get("/content/?kind=sms").get_data(as_text=True)
    assert "短信A" not in client.get("/content/?kind=email").get_data(as_text=True)
    assert "春季新品发布会邀请" in client.get("/content/?tag=新品").get_data(as_text=True)
    assert "短信A" not in client.get("/content/?tag=新品").get_data(as_text=True)
    assert "春季新品发布会邀请" not in client.get("/content/?status=approved").get_data(as_text=True)
    fragment = client.get("/content/?q=短信", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "短信A" in fragment and "<html" not in fragment


def test_analyst_sees_approved_content_only(app, client, login_as, people, email_draft):
    with app.app_context():
        other = service.create_asset(user(people["author"]), "sms", "未审核短信")
        other_id = other.id
        service.submit_for_review(user(people["author"]), email_draft)
        service.approve(user(people["reviewer"]), email_draft)
    login_as("data_analyst")
    listing = client.get("/content/").get_data(as_text=True)
    assert "春季新品发布会邀请" in listing and "未审核短信" not in listing
    assert client.get(f"/content/{other_id}").status_code == 404
    assert client.get("/content/new").status_code == 403


def test_reviewer_cannot_edit_and_specialist_cannot_approve(app, client, login_as, people, email_draft):
    login_as("reviewer")
    assert client.post(f"/content/versions/{email_draft}/edit", data={}).status_code == 403
    other = app.test_client()
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
    with other.session_transaction() as session:
        session["_user_id"] = str(people["author"])
    assert other.post(f"/content/versions/{email_draft}/approve").status_code == 403


def test_word_list_is_managed_by_administrators(app, client, login_as):
    login_as("administrator")
    assert "国家级" in client.get("/content/settings").get_data(as_text=True)  # seeded by the migration
    assert client.post("/content/settings", data={"word-word": "秒杀", "word-severity": "warning"}).status_code == 303
    assert "秒杀" in client.get("/content/settings").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Asset)) is None


def test_preview_as_a_real_contact(app, client, login_as, people, email_draft):
    from portal.audience.models import Contact

    login_as("operations_specialist")
    with app.app_context():
        contact = Contact(email="real@example.com", name="真实客户", company="华东制造")
        db.session.add(contact)
        db.session.commit()
        contact_id = contact.id
    html = client.post(
        f"/content/versions/{email_draft}/preview",
        data={
            "subject": "{{ contact.name }}@{{ contact.company }}",
            "html_body": GOOD_HTML,
            "sample": f"contact:{contact_id}",
        },
    ).get_data(as_text=True)
    assert "真实客户@华东制造" in html
    assert f'value="contact:{contact_id}" selected' in html


def test_forbidden_words_are_highlighted_where_they_stand(app, client, login_as):
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "email", "name": "违规"}).headers["Location"]
    form = {
        "name": "违规",
        "subject": "本季国家级新品",
        "html_body": "<p>hi</p>",
        "wecom_format": "text",
        "action": "submit",
    }
    html = client.post(edit_url, data=form).get_data(as_text=True)
    assert "本季<mark>国家级</mark>新品" in html


def test_people_limited_to_approved_content_do_not_find_assets_by_draft_subjects(
    app, client, login_as, people, email_draft
):
    with app.app_context():
        author, reviewer = user(people["author"]), user(people["reviewer"])
        service.submit_for_review(author, email_draft)
        service.approve(reviewer, email_draft)
        draft = service.new_draft_from(author, db.session.get(AssetVersion, email_draft).asset_id)
        service.save_draft(author, draft.id, {**draft.fields(), "subject": "内部折扣预告"})
    login_as("data_analyst")
    assert "春季新品发布会邀请" not in client.get("/content/?q=内部折扣").get_data(as_text=True)
    listing = client.get("/content/?q=春季新品").get_data(as_text=True)
    # The version cell, not any "v2" elsewhere in the page (a random CSRF token can hold one).
    assert "春季新品发布会邀请" in listing and "<td>v1 " in listing and "<td>v2 " not in listing
    login_as("reviewer")
    assert "春季新品发布会邀请" in client.get("/content/?q=内部折扣").get_data(as_text=True)


def test_a_refused_save_writes_nothing_while_the_page_renders_again(app, client, login_as):
    """A refused save used to change the version before the check refused it; re-rendering
    the page flushed that change, holding SQLite's write lock while the session was saved on
    another connection. Nothing of a refused save may reach the database."""
    from sqlalchemy import event

    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "email", "name": "锁测试"}).headers["Location"]
    form = {"name": "锁测试", "subject": "好", "html_body": "<p>a</p>", "wecom_format": "text", "action": "save"}
    assert client.post(edit_url, data=form).status_code == 303
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("UPDATE CONTENT", "INSERT INTO CONTENT", "INSERT INTO AUDIT")):
            writes.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        refused = {**form, "text_written_by_hand": "y", "text_body": "手写", "html_body": "<p>{% include 'x' %}</p>"}
        response = client.post(edit_url, data=refused)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 422
    assert writes == []
    html = response.get_data(as_text=True)
    assert "HTML 正文，第 1 行" in html and "include" in html
    assert "手写" in html  # the person's input is still in the form
    with app.app_context():
        version = db.session.scalar(select(AssetVersion))
        assert version.html_body == "<p>a</p>" and version.text_written_by_hand is False


def test_the_review_page_has_one_comment_box(app, client, login_as, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        asset_id = db.session.get(AssetVersion, email_draft).asset_id
    login_as("reviewer")
    page = client.get(f"/content/{asset_id}").get_data(as_text=True)
    assert page.count("<textarea") == 1
    assert "批准" in page and "要求修改" in page


def test_a_contributor_sees_why_they_cannot_approve(app, client, login_as, email_draft, people):
    manager_id = login_as("marketing_manager")
    with app.app_context():
        manager = user(manager_id)
        service.save_draft(manager, email_draft, {"subject": "经理改过的标题", "html_body": GOOD_HTML})
        service.submit_for_review(manager, email_draft)
        asset_id = db.session.get(AssetVersion, email_draft).asset_id
    page = client.get(f"/content/{asset_id}").get_data(as_text=True)
    assert "formaction" not in page and "另一位审核人" in page
    response = client.post(f"/content/versions/{email_draft}/approve", follow_redirects=True)
    assert "您编写了版本 1 的部分内容" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(AssetVersion, email_draft).status == "in_review"


def test_a_draft_saved_with_a_loader_tag_before_the_check_can_still_be_opened_and_fixed(app, client, login_as):
    """Drafts saved before loader tags were refused used to answer 500 on every page."""
    login_as("operations_specialist")
    edit_url = client.post("/content/new", data={"kind": "email", "name": "旧草稿"}).headers["Location"]
    version_id = int(edit_url.split("/")[-2])
    with app.app_context():
        version = db.session.get(AssetVersion, version_id)
        version.html_body = "<p>你好</p>\n{% include 'header.html' %}"
        db.session.commit()
        asset_id = version.asset_id
    for response in (
        client.get(edit_url),
        client.get(f"/content/{asset_id}"),
        client.post(f"/content/versions/{version_id}/preview", data={}),
    ):
        assert response.status_code == 200
        assert "HTML 正文，第 2 行：不允许使用标签“include”" in response.get_data(as_text=True)
    form = {"name": "旧草稿", "subject": "修好了", "html_body": "<p>你好</p>", "wecom_format": "text", "action": "save"}
    assert client.post(edit_url, data=form).status_code == 303
    with app.app_context():
        assert db.session.get(AssetVersion, version_id).html_body == "<p>你好</p>"
