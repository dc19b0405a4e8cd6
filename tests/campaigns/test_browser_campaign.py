import re
import time

import pytest


@pytest.mark.browser
def test_configure_test_send_and_publish_a_branching_campaign_in_chinese(
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
    start_worker()
    page.goto(live_server + "/campaigns/new")
    page.fill("#name", "线索培育邮件序列")
    page.select_option("#segment_id", label="上海")
    page.get_by_role("button", name="创建").click()
    page.wait_for_url(re.compile(r"/campaigns/\d+$"))

    def add(kind, **fields):
        page.select_option("#kind", kind)
        for key, value in fields.items():
            if key in ("parent", "condition", "action_type", "content_version_id"):
                page.select_option("#" + key, str(value))
            else:
                page.fill("#" + key, str(value))
        page.click("#add-step")
        page.wait_for_load_state()

    add("message", content_version_id=setup["approved"])
    add("delay", days=2)
    add("branch", condition="clicked")
    branch_id = page.locator("ol.steps li").nth(2).inner_text().split("#")[1].split(" ")[0]
    add("action", parent=f"{branch_id}:yes", action_type="notify_owner")
    add("message", parent=f"{branch_id}:no", content_version_id=setup["approved"])
    assert "活动配置完整，校验通过。" in page.locator("#validation").inner_text()
    assert page.locator(".flow-diagram svg rect").count() == 5

    # Publishing before a test send is refused, and says why.
    page.get_by_role("button", name="发布", exact=True).click()
    page.wait_for_load_state()
    assert "test send" in page.locator("#flash").inner_text()

    page.fill("#address", "wang@example.com")
    page.locator("#test-send").get_by_role("button", name="添加").click()
    page.wait_for_load_state()
    campaign_url = page.url
    page.get_by_role("button", name="发送测试").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    deadline = time.monotonic() + 30
    while len(smtp.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(smtp.messages) == 2  # both message steps, to the one test address
    page.goto(campaign_url)
    assert page.locator("#test-history").inner_text().count("[TEST]") == 2
    page.get_by_role("button", name="发布", exact=True).click()
    page.wait_for_load_state()
    assert "已发布" in page.locator("#flash").inner_text()
    assert "已排期" in page.locator(".page-head").inner_text()
