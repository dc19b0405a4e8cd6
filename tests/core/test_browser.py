import re

import pytest


@pytest.mark.browser
def test_dashboard_in_chinese_then_switched_to_english(browser_page, browser_login_as, live_server):
    page = browser_page
    browser_login_as(page, "marketing_manager", name="王经理")
    page.goto(live_server + "/")
    assert page.locator("h1").inner_text() == "仪表盘"
    assert "欢迎，王经理。" in page.locator("main").inner_text()
    page.get_by_role("button", name="English").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.locator("h1").inner_text() == "Dashboard"
    assert page.locator("html").get_attribute("lang") == "en"
