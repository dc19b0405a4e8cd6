"""The operating guide's nurture sequence built entirely on the canvas, in Chinese: email on
day 1, wait, an email on day 3 only to those who opened it (the 是 path), wait, email on day 7;
then test-sent, published, run through the runner, with the canvas's figures equal to the
ledger's."""

import re
import time
from datetime import timedelta

import pytest
from playwright.sync_api import expect


@pytest.mark.browser
def test_build_the_nurture_sequence_on_the_canvas_test_send_publish_and_read_the_figures(
    app,
    setup,
    browser_page,
    browser_login_as,
    live_server,
    smtp,
    start_worker,
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    page.goto(live_server + "/campaigns/new")
    page.fill("#name", "线索培育邮件序列")
    page.select_option("#segment_id", label="上海")
    page.get_by_role("button", name="创建").click()
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))
    canvas = page.locator("#campaign-canvas")

    def add(plus_name, kind, **fields):
        canvas.get_by_role("link", name=plus_name).click()
        expect(page.locator("#canvas-panel-title")).to_have_text("在此添加一步")
        page.locator("#canvas-panel").get_by_role("link", name=kind, exact=True).click()
        expect(page.locator("#canvas-panel")).to_contain_text(f"新步骤：{kind}")
        for key, value in fields.items():
            if key in ("content_version_id", "condition"):
                page.select_option(f"#step-{key}", str(value))
            else:
                page.fill(f"#step-{key}", str(value))
        page.locator("#canvas-panel").get_by_role("button", name="添加", exact=True).click()
        # The answer opens the new step in the panel and is read out.
        expect(page.locator("#canvas-panel-title")).to_have_text(re.compile(rf"^第 \d+ 步：{kind}$"))
        expect(page.locator("#announcer")).to_contain_text("步已添加")

    add("在流程开头添加一步", "消息内容", content_version_id=setup["approved"])
    add(re.compile(r"^在第 1 步：.*之后添加一步$"), "等待", days=2)
    add(re.compile(r"^在第 2 步：等待 2 天之后添加一步$"), "分支", condition="opened", window_days=2)
    add("在第 3 步的“是”路径开头添加一步", "消息内容", content_version_id=setup["approved"])
    add(re.compile(r"^在第 3 步：.*之后添加一步$"), "等待", days=4)
    add(re.compile(r"^在第 5 步：等待 4 天之后添加一步$"), "消息内容", content_version_id=setup["approved"])

    # The drawing: both paths of the branch, the 是 path holding its email, and the rejoin.
    expect(canvas.locator(".canvas-node")).to_have_count(6)
    lanes = canvas.locator(".canvas-lane")
    expect(lanes).to_have_count(2)
    expect(lanes.nth(0).locator(".canvas-lane-label")).to_have_text("是")
    expect(lanes.nth(1).locator(".canvas-lane-label")).to_have_text("否")
    expect(lanes.nth(0).locator(".canvas-node")).to_have_count(1)
    expect(lanes.nth(0).locator(".canvas-node .canvas-label")).to_contain_text("第1天：欢迎")
    expect(lanes.nth(1).locator(".canvas-node")).to_have_count(0)
    expect(canvas.locator(".canvas-join")).to_have_text("“是”和“否”路径在此汇合")
    expect(canvas.locator(".canvas-day")).to_have_text(["第 1 天", "第 3 天", "第 7 天"])
    expect(page.locator("#validation")).to_contain_text("活动配置完整，校验通过。")

    # A step opens in the side panel with only its kind's fields; the keyboard moves steps.
    canvas.locator("a.canvas-open", has_text="等待 2 天").click()
    expect(page.locator("#canvas-panel-title")).to_have_text("第 2 步：等待")
    expect(page.locator("#step-days")).to_have_value("2")
    expect(page.locator("#step-content_version_id")).to_have_count(0)
    canvas.get_by_role("button", name=re.compile(r"^上移第 2 步：等待 2 天$")).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_have_text("步骤已移动：现在是第 1 步。")
    canvas.get_by_role("button", name=re.compile(r"^下移第 1 步：等待 2 天$")).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_have_text("步骤已移动：现在是第 2 步。")
    expect(canvas.locator(".canvas-day")).to_have_text(["第 1 天", "第 3 天", "第 7 天"])

    # Test send (a worker sends it), publish; then the runner is driven from here, in time.
    worker = start_worker()
    page.fill("#address", "wang@example.com")
    page.locator("#test-send").get_by_role("button", name="添加").click()
    page.wait_for_load_state()
    campaign_url = page.url.split("?")[0].split("#")[0]
    page.get_by_role("button", name="发送测试").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    deadline = time.monotonic() + 30
    while len(smtp.messages) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(smtp.messages) == 3  # the three message steps, to the one test address
    worker.terminate()
    worker.wait(timeout=30)
    page.goto(campaign_url)
    page.get_by_role("button", name="发布", exact=True).click()
    page.wait_for_load_state()
    assert "已发布" in page.locator("#flash").inner_text()

    # The canvas's figures against the ledger, as the runner moves the contact on.
    from portal.campaigns import canvas as figures
    from portal.campaigns.models import Campaign
    from portal.campaigns.runner import run_due
    from portal.extensions import db
    from portal.models_base import utcnow

    campaign_id = int(campaign_url.rsplit("/", 1)[1])
    with app.app_context():
        run_due(utcnow() + timedelta(minutes=1))
        db.session.commit()
        assert db.session.get(Campaign, campaign_id).started_at is not None
        run_due(utcnow() + timedelta(days=2, minutes=2))
        db.session.commit()
        ledger = figures.step_figures(campaign_id)
    # The first email is in the ledger; the one contact waits at the branch for an open.
    assert [c["reached"] for c in ledger.values() if "reached" in c] == [1]
    assert [c["waiting"] for c in ledger.values() if c.get("waiting")] == [1]
    page.goto(campaign_url)
    for step_id, counts in ledger.items():
        node = page.locator(f"#step-{step_id}")
        for figure, count in counts.items():
            expect(node.locator(f".canvas-figure[data-figure='{figure}'] strong").first).to_have_text(str(count))


@pytest.mark.browser
def test_a_step_dragged_by_its_handle_moves_where_it_is_dropped(
    app, setup, browser_page, browser_login_as, live_server
):
    from portal.auth.models import User
    from portal.campaigns import service
    from portal.extensions import db

    with app.app_context():
        actor = db.session.get(User, setup["manager"])
        campaign_id = service.create_campaign(actor, {"name": "拖动", "template": "nurture"}).id
    page = browser_page
    browser_login_as(page, "marketing_manager")
    page.goto(f"{live_server}/campaigns/{campaign_id}")
    canvas = page.locator("#campaign-canvas")
    main = canvas.locator(".canvas-board > ol.canvas-path > li.canvas-node")
    expect(main.nth(1)).to_contain_text("等待 2 天")
    handle = main.nth(1).locator(".canvas-handle")
    target = main.nth(0).locator(".canvas-box")
    handle.hover()
    page.mouse.down()
    box = target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 5, steps=12)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 2, steps=4)
    page.mouse.up()
    expect(page.locator("#announcer")).to_have_text("步骤已移动：现在是第 1 步。")
    expect(main.nth(0)).to_contain_text("等待 2 天")
