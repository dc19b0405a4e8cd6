"""The canvas as people use it: the page, the self-replacing widget answering htmx, the side
panel with only the chosen kind's fields, accessible names, and who may do what."""

import re

from sqlalchemy import select

from portal.audit import AuditEvent
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep
from portal.extensions import db

HTMX = {"HX-Request": "true"}


def new_campaign(client, setup, template=""):
    response = client.post(
        "/campaigns/new", data={"name": "培育邮件", "segment_id": setup["segment"], "template": template}
    )
    assert response.status_code == 303
    return response.headers["Location"]


def add(client, url, kind, **fields):
    return client.post(f"{url}/steps", data={"kind": kind, **fields}, headers=HTMX)


def step_ids(app):
    with app.app_context():
        return {(s.kind, s.branch, s.position): s.id for s in db.session.scalars(select(CampaignStep))}


def test_the_canvas_draws_both_paths_day_markers_and_the_rejoin_in_chinese(client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup, template="nurture")
    page = client.get(url).get_data(as_text=True)
    for text in ("第 1 天", "第 3 天", "第 7 天", "是", "否", "汇合"):
        assert text in page, text
    assert page.count('class="canvas-lane canvas-yes"') == 1 and page.count('class="canvas-lane canvas-no"') == 1
    assert "<svg" not in page and "style=" not in page and "onclick" not in page


def test_opening_a_step_shows_only_the_fields_of_its_kind(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup, template="nurture")
    steps = step_ids(app)
    response = client.get(f"{url}/canvas?step={steps[('delay', None, 1)]}", headers=HTMX)
    fragment = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert fragment.lstrip().startswith('<section class="card canvas" id="campaign-canvas"')
    assert 'name="days"' in fragment and 'name="content_version_id"' not in fragment
    assert 'name="condition"' not in fragment and "<html" not in fragment
    message = client.get(f"{url}/canvas?step={steps[('message', None, 0)]}", headers=HTMX).get_data(as_text=True)
    assert 'name="content_version_id"' in message and 'name="days"' not in message


def test_plus_on_an_edge_asks_the_kind_then_inserts_there(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup)
    add(client, url, "message", content_version_id=setup["approved"])
    add(client, url, "message", content_version_id=setup["approved"])
    choose = client.get(f"{url}/canvas?index=1", headers=HTMX).get_data(as_text=True)
    assert "添加一步" in choose and "kind=delay" in choose and 'name="days"' not in choose
    fields = client.get(f"{url}/canvas?index=1&kind=delay", headers=HTMX).get_data(as_text=True)
    assert 'name="days"' in fields and 'name="index" value="1"' in fields
    response = add(client, url, "delay", index="1", days="2")
    assert response.status_code == 200 and "第 2 步已添加" in response.get_data(as_text=True)
    with app.app_context():
        campaign = db.session.scalar(select(Campaign))
        assert [s.kind for s in campaign.steps] == ["message", "delay", "message"]


def test_a_bad_value_comes_back_in_the_panel_with_the_sentence_and_422(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup)
    response = add(client, url, "delay", index="0", days="-2")
    assert response.status_code == 422
    assert "等待时间不能为负数" in response.get_data(as_text=True)
    plain = client.post(f"{url}/steps", data={"kind": "delay", "index": "0", "days": "0"})
    assert plain.status_code == 422 and "<html" in plain.get_data(as_text=True)


def test_repeated_controls_say_which_step_they_act_on(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup, template="nurture")
    page = client.get(url).get_data(as_text=True)
    assert 'aria-label="移除第 2 步：等待 2 天"' in page
    assert 'aria-label="上移第 2 步：等待 2 天"' in page and 'aria-label="下移第 2 步：等待 2 天"' in page
    assert 'aria-label="在第 2 步：等待 2 天之后添加一步"' in page
    labels = re.findall(r'aria-label="(移除[^"]*)"', page)
    assert len(labels) == len(set(labels)) == 6


def test_moving_and_removing_answer_with_the_widget(app, client, login_as, setup):
    login_as("marketing_manager")
    new_campaign(client, setup, template="nurture")
    steps = step_ids(app)
    wait = steps[("delay", None, 1)]
    moved = client.post(f"/campaigns/steps/{wait}/move", data={"offset": "-1"}, headers=HTMX)
    assert moved.status_code == 200 and "现在是第 1 步" in moved.get_data(as_text=True)
    plain = client.post(f"/campaigns/steps/{wait}/move", data={"offset": "1"})
    assert plain.status_code == 303 and plain.headers["Location"].endswith(f"?step={wait}#campaign-canvas")
    removed = client.post(f"/campaigns/steps/{wait}/delete", headers=HTMX)
    assert removed.status_code == 200 and "第 2 步已移除" in removed.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(CampaignStep, wait) is None


def test_a_running_campaign_hides_editing_and_refuses_it_with_the_reason(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup, template="nurture")
    steps = step_ids(app)
    with app.app_context():
        campaign = db.session.scalar(select(Campaign))
        campaign.status = CampaignStatus.RUNNING
        db.session.commit()
    page = client.get(url).get_data(as_text=True)
    assert "活动正在运行：暂停后才能修改流程。" in page
    assert "canvas-add" not in page and "canvas-remove" not in page and 'id="step-form"' not in page
    assert 'hx-trigger="every 5s"' in page
    refused = client.post(f"/campaigns/steps/{steps[('delay', None, 1)]}/edit", data={"days": "3"}, headers=HTMX)
    assert refused.status_code == 422 and "暂停" in refused.get_data(as_text=True)


def test_pause_asks_first_and_resume_is_a_separate_form(app, client, login_as, setup):
    login_as("marketing_manager")
    url = new_campaign(client, setup, template="nurture")
    with app.app_context():
        campaign = db.session.scalar(select(Campaign))
        campaign.status = CampaignStatus.RUNNING
        db.session.commit()
    page = client.get(url).get_data(as_text=True)
    assert 'value="pause"' in page and "data-confirm=" in page
    response = client.post(f"{url}/status", data={"action": "pause"}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert "活动已暂停" in text and 'id="paused"' in text
    assert f'action="{url}/resume"' in text
    with app.app_context():
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.action == "campaign.paused")).one()


def test_analysts_read_the_canvas_and_its_figures_but_change_nothing(app, client, login_as, setup, make_user):
    from portal.auth.models import User
    from portal.campaigns import service

    with app.app_context():
        actor = db.session.get(User, setup["manager"])
        campaign = service.create_campaign(actor, {"name": "只读", "template": "nurture"})
        campaign_id = campaign.id
    login_as("data_analyst")
    page = client.get(f"/campaigns/{campaign_id}")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="campaign-canvas"' in text
    assert "canvas-add" not in text and "canvas-remove" not in text and 'id="step-form"' not in text
    assert client.post(f"/campaigns/{campaign_id}/steps", data={"kind": "delay", "days": "1"}).status_code == 403


def test_new_campaign_page_offers_owner_start_window_and_templates(client, login_as, setup):
    login_as("marketing_manager")
    page = client.get("/campaigns/new").get_data(as_text=True)
    for text in (
        'name="owner_id"',
        'name="planned_start"',
        'name="weekday"',
        'id="timezone"',
        "中国（北京时间",
        "线索培育",
    ):
        assert text in page, text
    assert 'type="text" id="window_start"' not in page


def test_an_ab_step_shows_both_variants_and_the_split(app, client, login_as, setup):
    from portal.auth.models import User
    from portal.campaigns import service

    with app.app_context():
        actor = db.session.get(User, setup["manager"])
        campaign = service.create_campaign(actor, {"name": "A/B 测试"})
        ab = {"version_b": setup["approved"], "share": 20, "window_hours": 24, "metric": "opens"}
        service.add_step(
            actor, campaign.id, "message", {"ab": ab}, channel="email", content_version_id=setup["approved"]
        )
        campaign_id = campaign.id
    login_as("marketing_manager")
    page = client.get(f"/campaigns/{campaign_id}").get_data(as_text=True)
    assert "A: 第1天：欢迎 v1 · B: 第1天：欢迎 v1" in page
    assert "20% 的联系人参与测试，A 和 B 各占一半" in page and "24 小时后收到按打开胜出的版本" in page
