"""Campaign configuration: the flow, its diagram, and validation listing every problem."""

from sqlalchemy import select

from portal.auth.models import User
from portal.campaigns import diagram, service
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
        svg = diagram.flow_svg(db.session.get(Campaign, campaign.id), lambda s: s.kind, "线索培育")
        assert svg.count("<rect") == 6 and "<script" not in svg and "线索培育" in svg


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
    assert "<svg" in page and "第1天：欢迎" in page and "flash-success" in page
    with app.app_context():
        assert db.session.scalar(select(Campaign.name)) == "培育邮件"


def test_reviewers_and_analysts_cannot_edit_campaigns(client, login_as, setup):
    login_as("reviewer")
    assert client.get("/campaigns/").status_code == 403
    assert client.post("/campaigns/new", data={"name": "x"}).status_code == 403
