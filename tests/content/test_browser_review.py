import re

import pytest
from playwright.sync_api import expect

from tests.content.conftest import GOOD_HTML


@pytest.mark.browser
def test_author_submits_and_a_reviewer_approves_in_chinese(app, browser_page, browser_login_as, live_server):
    page = browser_page
    browser_login_as(page, "operations_specialist", name="李运营")
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("双十一会员邀请")
    page.get_by_label("起始内容").select_option(label="空白内容")  # written as HTML, not blocks
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    page.get_by_label("主题").fill("{{ contact.name | default('客户') }}，双十一会员专享")
    page.get_by_label("HTML 正文").fill(GOOD_HTML)
    # The live preview follows the typing, rendered as the sample contact.
    expect(page.locator("#preview")).to_contain_text("王小明，双十一会员专享")
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


@pytest.mark.browser
def test_request_changes_then_edit_then_the_diff_then_approve_in_chinese(
    app, client, browser_page, browser_login_as, live_server
):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    browser_login_as(page, "operations_specialist", name="李运营")
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("年终答谢邀请")
    page.get_by_label("起始内容").select_option(label="空白内容")  # written as HTML, not blocks
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    page.get_by_label("主题").fill("年终答谢会邀请您参加")
    page.get_by_label("HTML 正文").fill(GOOD_HTML)
    page.get_by_role("button", name="保存并提交审核").click()
    page.wait_for_url(re.compile(r"/content/\d+$"))
    author_cookies = page.context.cookies()

    # The reviewer sends it back with one comment (in a session of their own).
    page.context.clear_cookies()
    client.delete_cookie("session")
    browser_login_as(page, "reviewer", name="张审核")
    page.goto(live_server + "/content/review")
    page.get_by_role("link", name=re.compile("年终答谢邀请")).click()
    assert page.locator("textarea").count() == 1  # one comment box
    page.locator("#comment").fill("标题请写明日期")
    page.get_by_role("button", name="要求修改").click()
    page.wait_for_url(re.compile(r"/content/\d+"))
    assert "需修改" in page.locator(".page-head").inner_text()

    # The author follows the notification, which carries the comment, to the frozen version
    # and revises it in a new version.
    page.context.clear_cookies()
    page.context.add_cookies(author_cookies)
    page.goto(live_server + "/notifications")
    page.get_by_role("link", name=re.compile("标题请写明日期")).click()
    assert "标题请写明日期" in page.locator(".thread").inner_text()
    page.get_by_role("button", name="在新版本中修改").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    assert "v2" in page.locator("h1").inner_text()
    page.get_by_label("主题").fill("12 月 20 日年终答谢会邀请您参加")
    page.get_by_role("button", name="手机屏幕").click()
    # Polled by Playwright itself: wait_for_function evaluates its string with eval in the
    # page, which the portal's Content-Security-Policy forbids.
    expect(page.locator("#preview-frame")).to_have_css("width", "375px")
    page.get_by_role("button", name="保存并提交审核").click()
    page.wait_for_url(re.compile(r"/content/\d+$"))

    # Another reviewer sees what changed since the version sent back, within the page.
    page.context.clear_cookies()
    client.delete_cookie("session")
    browser_login_as(page, "reviewer", name="刘审核")
    page.goto(live_server + "/content/review")
    page.get_by_role("link", name=re.compile("年终答谢邀请 v2")).click()
    changes = page.locator("#changes")
    assert "相对于版本 1 的改动" in changes.inner_text()
    assert "对版本 1 的修改要求： 标题请写明日期" in changes.inner_text()
    assert changes.locator(".diff-field ins").first.inner_text() == "12 月 20 日"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    box = changes.bounding_box()
    assert box["x"] + box["width"] <= 1280
    page.get_by_text("查看源代码改动").click()
    assert "+12 月 20 日年终答谢会邀请您参加" in changes.locator(".diff-source pre").inner_text()
    page.locator("#comment").fill("可以发送")
    page.get_by_role("button", name="批准").click()
    page.wait_for_url(re.compile(r"/content/\d+"))
    assert "已批准" in page.locator(".page-head").inner_text()
