import pytest
from sqlalchemy import select

from portal.audit import AuditEvent
from portal.content import service
from portal.content.models import AssetVersion
from portal.extensions import db
from portal.notify import Notification
from tests.content.conftest import user


def test_submit_then_approve_by_another_reviewer(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        assert db.session.get(AssetVersion, email_draft).status == "in_review"
        service.approve(user(people["reviewer"]), email_draft, "可以发送")
        version = db.session.get(AssetVersion, email_draft)
        assert version.status == "approved"
        assert version.decided_by_id == people["reviewer"]
        assert [c.kind for c in version.comments] == ["submitted", "approved"]


def test_author_can_never_approve_own_version_whatever_their_roles(app, make_user):
    with app.app_context():
        both = user(make_user("marketing_manager", "reviewer"))  # edits and reviews
        asset = service.create_asset(both, "sms", "短信提醒")
        service.save_draft(both, asset.latest.id, {"sms_text": "王先生您好，新品上市。回T退订"})
        service.submit_for_review(both, asset.latest.id)
        with pytest.raises(service.ContentError) as refused:
            service.approve(both, asset.latest.id)
        assert refused.value.code == "contributor_cannot_approve" and refused.value.params == {"version": 1}
        assert db.session.get(AssetVersion, asset.latest.id).status == "in_review"


def test_request_changes_freezes_the_version_and_tells_the_author_the_comment(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        with pytest.raises(service.ContentError):
            service.request_changes(user(people["reviewer"]), email_draft, "   ")
        service.request_changes(user(people["reviewer"]), email_draft, "标题再短一些")
        version = db.session.get(AssetVersion, email_draft)
        assert version.status == "returned" and not version.editable
        assert version.comments[-1].body == "标题再短一些"
        note = db.session.scalar(select(Notification).where(Notification.user_id == people["author"]))
        assert "需修改" in note.message and "标题再短一些" in note.message
        assert note.link == f"/content/{version.asset_id}?version={version.id}"


def test_the_authors_edits_after_request_changes_go_into_a_new_version(app, people, email_draft):
    with app.app_context():
        author, reviewer = user(people["author"]), user(people["reviewer"])
        service.submit_for_review(author, email_draft)
        service.request_changes(reviewer, email_draft, "标题再短一些")
        with pytest.raises(service.ContentError) as refused:
            service.save_draft(author, email_draft, {"subject": "改在原版本上"})
        assert refused.value.code == "not_a_draft"
        asset_id = db.session.get(AssetVersion, email_draft).asset_id
        revision = service.new_draft_from(author, asset_id)
        assert revision.number == 2 and revision.subject == "春季新品发布会邀请"
        service.save_draft(author, revision.id, {**revision.fields(), "subject": "新品发布会邀请"})
        service.submit_for_review(author, revision.id)
        frozen = db.session.get(AssetVersion, email_draft)
        assert frozen.subject == "春季新品发布会邀请" and frozen.status == "returned"
        # The reviewer compares with what they reviewed last.
        assert service.review_base(revision).id == email_draft
        changes = service.review_changes(revision)
        subject = next(f for f in changes.fields if f.name == "subject")
        assert [(p.text, p.change) for p in subject.pieces] == [("春季", "removed"), ("新品发布会邀请", "same")]
        service.approve(reviewer, revision.id)
        assert db.session.get(AssetVersion, revision.id).status == "approved"


def test_a_manager_who_rewrites_a_draft_cannot_approve_it(app, people):
    """The review's bypass: a manager (who may edit and review) replaces a specialist's draft,
    submits and approves it. Everyone who saved a change is a contributor and cannot approve."""
    with app.app_context():
        author, manager = user(people["author"]), user(people["manager"])
        asset = service.create_asset(author, "sms", "会员日短信")
        version_id = asset.latest.id
        service.save_draft(author, version_id, {"sms_text": "会员日全场八折。回T退订"})
        service.save_draft(manager, version_id, {"sms_text": "会员日全场一折，速来！回T退订"})
        service.submit_for_review(manager, version_id)
        with pytest.raises(service.ContentError) as refused:
            service.approve(manager, version_id)
        assert refused.value.code == "contributor_cannot_approve"
        version = db.session.get(AssetVersion, version_id)
        assert version.status == "in_review"
        assert service.contributor_ids(version) == {people["author"], people["manager"]}
        # The audit trail shows who did what; no approval by the manager.
        trail = db.session.execute(
            select(AuditEvent.action, AuditEvent.actor_id).where(AuditEvent.target == f"version:{version_id}")
        ).all()
        assert ("content.draft_saved", people["manager"]) in trail
        assert ("content.approved", people["manager"]) not in trail
        service.approve(user(people["reviewer"]), version_id)
        assert db.session.get(AssetVersion, version_id).status == "approved"


def test_writers_of_a_returned_version_cannot_approve_its_revision(app, people, make_user):
    with app.app_context():
        writer = user(make_user("marketing_manager", name="赵经理"))  # edits and reviews
        asset = service.create_asset(writer, "sms", "返工短信")
        service.save_draft(writer, asset.latest.id, {"sms_text": "新品到店。回T退订"})
        service.submit_for_review(writer, asset.latest.id)
        service.request_changes(user(people["reviewer"]), asset.latest.id, "补充门店地址")
        revision = service.new_draft_from(user(people["author"]), asset.id)
        service.save_draft(user(people["author"]), revision.id, {"sms_text": "新品到店，地址：南京路1号。回T退订"})
        service.submit_for_review(user(people["author"]), revision.id)
        # The revision still carries the writer's unapproved text.
        with pytest.raises(service.ContentError) as refused:
            service.approve(writer, revision.id)
        assert refused.value.code == "contributor_cannot_approve"


def test_only_the_author_may_withdraw(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        with pytest.raises(service.ContentError):
            service.withdraw(user(people["manager"]), email_draft)
        service.withdraw(user(people["author"]), email_draft)
        assert db.session.get(AssetVersion, email_draft).status == "draft"


def test_approved_version_never_changes_and_editing_starts_a_new_draft(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        service.approve(user(people["reviewer"]), email_draft)
        with pytest.raises(service.ContentError):
            service.save_draft(user(people["author"]), email_draft, {"subject": "改过的标题"})
        draft = service.new_draft_from(user(people["author"]), db.session.get(AssetVersion, email_draft).asset_id)
        assert draft.number == 2 and draft.status == "draft"
        assert draft.subject == "春季新品发布会邀请"
        assert db.session.get(AssetVersion, email_draft).subject == "春季新品发布会邀请"


def test_approving_a_newer_version_supersedes_the_old_one(app, people, email_draft):
    with app.app_context():
        author, reviewer = user(people["author"]), user(people["reviewer"])
        service.submit_for_review(author, email_draft)
        service.approve(reviewer, email_draft)
        draft = service.new_draft_from(author, db.session.get(AssetVersion, email_draft).asset_id)
        service.save_draft(author, draft.id, {**draft.fields(), "subject": "春季新品发布会（第二版）"})
        service.submit_for_review(author, draft.id)
        service.approve(reviewer, draft.id)
        assert db.session.get(AssetVersion, email_draft).status == "superseded"
        with pytest.raises(service.ContentError):
            service.approved_version(email_draft)
        assert service.approved_version(draft.id).subject == "春季新品发布会（第二版）"


def test_only_approved_content_can_be_sent(app, people, email_draft):
    with app.app_context():
        with pytest.raises(service.ContentError, match="approved"):
            service.approved_version(email_draft)
        service.submit_for_review(user(people["author"]), email_draft)
        with pytest.raises(service.ContentError):
            service.approved_version(email_draft)
        service.approve(user(people["reviewer"]), email_draft)
        content = service.approved_version(email_draft)
        html = content.templates["html_body"].render(
            {"contact": {"name": "王小明"}, "unsubscribe_url": "https://x.example/u/1"}
        )
        assert "王小明，您好！" in html and "https://x.example/u/1" in html


def test_every_transition_is_audited(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        service.approve(user(people["reviewer"]), email_draft)
        actions = set(db.session.scalars(select(AuditEvent.action)))
        assert {"content.created", "content.draft_saved", "content.submitted", "content.approved"} <= actions


def test_submission_notifies_reviewers_but_not_the_author(app, people, email_draft):
    with app.app_context():
        service.submit_for_review(user(people["author"]), email_draft)
        notified = set(db.session.scalars(select(Notification.user_id)))
        assert people["reviewer"] in notified and people["manager"] in notified
        assert people["author"] not in notified and people["analyst"] not in notified


def test_blocking_findings_stop_the_submission(app, people):
    with app.app_context():
        author = user(people["author"])
        asset = service.create_asset(author, "email", "违规邮件")
        service.save_draft(author, asset.latest.id, {"subject": "全网最低价", "html_body": "<p>国家级产品</p>"})
        with pytest.raises(service.ChecksFailed) as failed:
            service.submit_for_review(author, asset.latest.id)
        codes = {f.code for f in failed.value.findings}
        assert {"forbidden_word", "unsubscribe_missing"} <= codes
        assert db.session.get(AssetVersion, asset.latest.id).status == "draft"


def test_html_is_sanitised_at_save(app, people):
    with app.app_context():
        author = user(people["author"])
        asset = service.create_asset(author, "email", "清洗测试")
        version = service.save_draft(
            author,
            asset.latest.id,
            {
                "subject": "s",
                "html_body": '<p onclick="steal()" hx-get="/admin">hi</p><script>alert(1)</script>'
                '<a href="javascript:alert(1)">x</a><img src="x.png" onerror="bad()">',
            },
        )
        for bad in ("onclick", "hx-get", "<script", "javascript:", "onerror"):
            assert bad not in version.html_body
        assert "<p>hi</p>" in version.html_body


def test_text_part_is_derived_from_html_unless_written_by_hand(app, people):
    with app.app_context():
        author = user(people["author"])
        asset = service.create_asset(author, "email", "纯文本")
        version = service.save_draft(
            author, asset.latest.id, {"subject": "s", "html_body": "<p>第一段</p><p>第二段</p>"}
        )
        assert version.text_body == "第一段\n\n第二段"
        version = service.save_draft(
            author,
            asset.latest.id,
            {
                "subject": "s",
                "html_body": "<p>第一段</p>",
                "text_written_by_hand": True,
                "text_body": "手写的文本",
            },
        )
        assert version.text_body == "手写的文本"


def test_broken_template_is_refused_at_save_with_its_line(app, people):
    from portal.delivery.render import TemplateRefused

    with app.app_context():
        author = user(people["author"])
        asset = service.create_asset(author, "email", "坏模板")
        with pytest.raises(TemplateRefused) as refused:
            service.save_draft(
                author, asset.latest.id, {"subject": "s", "html_body": "<p>a</p>\n<p>{{ contact.nmae }}</p>"}
            )
        assert refused.value.line == 2
        assert "contact.nmae" in str(refused.value)
        assert db.session.get(AssetVersion, asset.latest.id).html_body == ""  # nothing saved


def test_saving_without_changing_anything_does_not_make_a_contributor(app, people, email_draft):
    with app.app_context():
        manager = user(people["manager"])
        version = db.session.get(AssetVersion, email_draft)
        service.save_draft(manager, email_draft, {**version.fields(), "text_written_by_hand": False})
        assert service.contributor_ids(db.session.get(AssetVersion, email_draft)) == {people["author"]}
        service.submit_for_review(user(people["author"]), email_draft)
        service.approve(manager, email_draft)
        assert db.session.get(AssetVersion, email_draft).status == "approved"
