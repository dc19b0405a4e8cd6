"""Campaign configuration: the flow, its diagram, and validation listing every problem."""

from sqlalchemy import select

from portal.auth.models import User
from portal.campaigns import canvas, service
from portal.campaigns.models import Campaign
from portal.extensions import db


def manager(ids):
    return db.session.get(User, ids["manager"])


def test_a_new_campaign_lists_every_problem_at_once(app, setup):
    with app.app_context():
        campaign = service.create_campaign(manager(setup), {"name": "线索培育"})
        messages = [p.message for p in service.validate(campaign.id)]
        assert "Choose the audience (a segment)." in messages
        assert "Add at least one message step." in messages


def test_lead_nurturing_sequence_with_a_click_branch_is_valid(app, setup):
    with app.app_context():
        actor = manager(setup)
        campaign = service.create_campaign(actor, {"name": "线索培育", "segment_id": setup["segment"]})
        service.add_step(actor, campaign.id, "message", channel="email", content_version_id=setup["approved"])
        service.add_step(actor, campaign.id, "delay", {"days": 2, "hours": 0})
        branch = service.add_step(actor, campaign.id, "branch", {"condition": "clicked", "window_days": 3})
        service.add_step(actor, campaign.id, "action", {"type": "notify_owner"}, parent_id=branch.id, branch="yes")
        service.add_step(actor, campaign.id, "delay", {"days": 3, "hours": 0}, parent_id=branch.id, branch="no")
        service.add_step(
            actor,
            campaign.id,
            "message",
            parent_id=branch.id,
            branch="no",
            channel="email",
            content_version_id=setup["approved"],
        )
        assert service.validate(campaign.id) == []
        order = [(s.kind, s.branch) for s in service.in_flow_order(db.session.get(Campaign, campaign.id))]
        assert order == [
            ("message", None),
            ("delay", None),
            ("branch", None),
            ("action", "yes"),
            ("delay", "no"),
            ("message", "no"),
        ]
        lane = canvas.layout(db.session.get(Campaign, campaign.id))
        assert [n.step.kind for n in lane.nodes] == ["message", "delay", "branch"]
        assert [n.step.kind for n in lane.nodes[2].yes.nodes] == ["action"]
        assert [n.step.kind for n in lane.nodes[2].no.nodes] == ["delay", "message"]


def test_unapproved_content_negative_delay_and_pathless_branch_are_each_reported(app, setup):
    with app.app_context():
        actor = manager(setup)
        campaign = service.create_campaign(actor, {"name": "有问题的活动", "segment_id": setup["segment"]})
        draft_step = service.add_step(actor, campaign.id, "message", channel="email", content_version_id=setup["draft"])
        delay = service.add_step(actor, campaign.id, "delay", {"days": -1, "hours": 0})
        branch = service.add_step(actor, campaign.id, "branch", {"condition": "opened"})
        problems = {(p.step_id, p.message) for p in service.validate(campaign.id)}
        assert (draft_step.id, "This message step uses content that is not approved.") in problems
        assert (delay.id, "A delay cannot be negative.") in problems
        assert (branch.id, "A branch needs at least one path.") in problems


def test_an_empty_audience_is_a_problem(app, setup):
    from portal.audience.models import Segment

    with app.app_context():
        nobody = Segment(
            name="无人", rules={"op": "and", "items": [{"field": "province", "operator": "eq", "value": "西藏"}]}
        )
        db.session.add(nobody)
        db.session.commit()
        campaign = service.create_campaign(manager(setup), {"name": "空受众", "segment_id": nobody.id})
        assert "The audience is empty." in [p.message for p in service.validate(campaign.id)]


def test_campaign_pages_build_the_flow(app, client, login_as, setup):
    login_as("marketing_manager")
    response = client.post("/campaigns/new", data={"name": "培育邮件", "segment_id": setup["segment"]})
    assert response.status_code == 303
    url = response.headers["Location"]
    assert (
        client.post(f"{url}/steps", data={"kind": "message", "content_version_id": setup["approved"]}).status_code
        == 303
    )
    page = client.get(url).get_data(as_text=True)
    assert 'id="campaign-canvas"' in page and "第1天：欢迎" in page and "flash-success" in page
    with app.app_context():
        assert db.session.scalar(select(Campaign.name)) == "培育邮件"


def test_reviewers_and_analysts_cannot_edit_campaigns(client, login_as, setup):
    login_as("reviewer")
    assert client.get("/campaigns/").status_code == 403
    assert client.post("/campaigns/new", data={"name": "x"}).status_code == 403


def test_ab_test_needs_a_second_approved_variant_a_share_a_window_and_a_metric(app, setup):
    with app.app_context():
        actor = manager(setup)
        campaign = service.create_campaign(actor, {"name": "A/B", "segment_id": setup["segment"]})
        bad = service.add_step(
            actor,
            campaign.id,
            "message",
            {"ab": {"version_b": setup["draft"], "share": 80, "window_hours": 0, "metric": "likes"}},
            channel="email",
            content_version_id=setup["approved"],
        )
        problems = {p.message for p in service.validate(campaign.id) if p.step_id == bad.id}
        assert problems == {
            "Variant B must be approved content.",
            "The A/B test share is 1 to 50 percent of the audience.",
            "The A/B test window is at least one hour.",
            "Choose how the winner is picked: opens or clicks.",
        }


def test_a_newer_approved_version_is_offered_not_applied(app, setup):
    from portal.campaigns.models import CampaignStep
    from portal.content import service as content
    from portal.content.models import AssetVersion

    with app.app_context():
        actor = manager(setup)
        campaign = service.create_campaign(actor, {"name": "换版本", "segment_id": setup["segment"]})
        step = service.add_step(actor, campaign.id, "message", channel="email", content_version_id=setup["approved"])
        assert service.newer_approved_version(step) is None
        first = db.session.get(AssetVersion, setup["approved"])
        author = db.session.get(User, first.author_id)
        reviewer = db.session.get(User, first.decided_by_id)
        draft = content.new_draft_from(author, first.asset_id)
        content.save_draft(author, draft.id, {**draft.fields(), "subject": "欢迎（新版）"})
        content.submit_for_review(author, draft.id)
        content.approve(reviewer, draft.id)
        step = db.session.get(CampaignStep, step.id)
        assert step.content_version_id == setup["approved"]  # nothing changed by itself
        assert service.newer_approved_version(step) == draft.id
        service.switch_to_newer_version(actor, step.id)
        assert db.session.get(CampaignStep, step.id).content_version_id == draft.id
