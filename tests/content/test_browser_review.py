import re

import pytest

from tests.content.conftest import GOOD_HTML


@pytest.mark.browser
def test_author_submits_and_a_reviewer_approves_in_chinese(app, browser_page, browser_login_as, live_server):
    page = browser_page
    browser_login_as(page, "operations_specialist", name="李运营")
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("双十一会员邀请")
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    page.get_by_label("主题").fill("{{ contact.name | default('客户') }}，双十一会员专享")
    page.get_by_label("HTML 正文").fill(GOOD_HTML)
    # The live preview follows the typing, rendered as the sample contact.
    page.wait_for_function("document.querySelector('#preview').innerText.includes('王小明，双十一会员专享')")
    page.get_by_role("button", name="保存并提交审核").click()
    page.wait_for_url(re.compile(r"/content/\d+$"))
    assert "审核中" in page.locator(".page-head").inner_text()

    # A reviewer, in another browser session, approves it from the queue.
    page.context.clear_cookies()
    browser_login_as(page, "reviewer", name="张审核")
    page.goto(live_server + "/content/review")
    page.get_by_role("link", name=re.compile("双十一会员邀请")).click()
    page.locator("#comment").fill("内容合规，可以发送")
    page.get_by_role("button", name="批准").click()
    page.wait_for_url(re.compile(r"/content/\d+"))
    assert "已批准" in page.locator(".page-head").inner_text()
    assert "内容合规，可以发送" in page.locator(".thread").inner_text()
