import re

import pytest


@pytest.mark.browser
def test_manager_signs_in_through_the_providers_form_and_lands_on_the_dashboard(
    app, browser_page, live_server, demo_mapping, monkeypatch
):
    # The callback URL registered at the provider is built from the portal's public address.
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", live_server)
    page = browser_page
    page.goto(live_server + "/")
    assert "/auth/login" in page.url
    page.click("#sso-sign-in")
    # The identity provider's own login form.
    page.fill("input[name=sub]", "manager@example.com")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(live_server) + r"/$"))
    assert page.locator("h1").inner_text() == "仪表盘"
    assert "王经理 Wang" in page.locator(".who").inner_text()
    nav = page.locator(".mainnav").inner_text()
    assert "系统管理" in nav  # managers give marketing roles to people
    page.get_by_role("button", name="退出登录").click()
    page.goto(live_server + "/")
    assert "/auth/login" in page.url
