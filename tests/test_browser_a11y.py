"""Accessibility in a real browser: axe-core (WCAG 2.1 A and AA) finds no violation on the main
pages in either language, and the keyboard alone adds and removes campaign steps and test
addresses with the focus landing on what changed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from portal.auth.models import User
from portal.content.models import AssetVersion, VersionStatus
from portal.extensions import db

AXE = Path(__file__).parent / "support" / "axe" / "axe-4.14.1.min.js"
# axe is served to the page from the page's own origin (intercepted by Playwright, never by the
# app), so the strict Content-Security-Policy stays on while the page is audited.
AXE_PATH = "/__axe__/axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture
def sample_data(app, make_user):
    """A draft email, a contact, a draft campaign with a step: something on every page."""
    from portal.campaigns import service as campaigns
    from portal.content import service as content
    from tests.factories import add_contacts, segment_of

    with app.app_context():
        author = db.session.get(User, make_user("marketing_manager"))
        asset = content.create_asset(author, "email", "新品发布")
        content.save_draft(
            author,
            asset.latest.id,
            {"subject": "新品上市", "html_body": "<p>{{ contact.name }}，您好！</p>", "text_body": "您好"},
        )
        contact_id = add_contacts(1)[0]
        campaign = campaigns.create_campaign(author, {"name": "春季活动", "segment_id": str(segment_of())})
        campaigns.add_step(author, campaign.id, "delay", {"days": 2, "hours": 0})
        return {"asset": asset.id, "version": asset.latest.id, "contact": contact_id, "campaign": campaign.id}


def axe_violations(page, live_server: str) -> list[str]:
    """Every WCAG 2.1 A/AA violation axe finds on the page, one line each."""
    page.add_script_tag(url=live_server + AXE_PATH)
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
    return [
        f"{page.url}: {violation['id']} ({violation['help']}) at "
        + "; ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        for violation in result["violations"]
    ]


MANAGER_PAGES = (
    "/",
    "/notifications",
    "/audience/contacts",
    "/audience/contacts/{contact}",
    "/audience/segments",
    "/audience/imports",
    "/content/",
    "/content/{asset}",
    "/content/versions/{version}/edit",
    "/campaigns/",
    "/campaigns/{campaign}",
    "/reports/",
)
ADMIN_PAGES = ("/admin/users", "/admin/roles", "/admin/settings", "/admin/audit")


@pytest.mark.browser
@pytest.mark.parametrize(
    ("browser_page", "locale", "language"),
    [("zh-CN", "zh_CN", "zh-CN"), ("en", "en", "en")],
    indirect=["browser_page"],
)
def test_main_pages_have_no_axe_violation(
    app, browser_page, browser_login_as, live_server, sample_data, locale, language
):
    page = browser_page
    page.route(live_server + AXE_PATH, lambda route: route.fulfill(path=str(AXE), content_type="text/javascript"))
    violations: list[str] = []

    def audit(path: str) -> None:
        response = page.goto(live_server + path.format(**sample_data))
        assert response is not None and response.status < 400, (path, response and response.status)
        page.wait_for_load_state("networkidle")
        assert page.locator("html").get_attribute("lang") == language, path
        violations.extend(axe_violations(page, live_server))

    audit("/auth/login")
    browser_login_as(page, "administrator", locale=locale)
    for path in ADMIN_PAGES:
        audit(path)
    browser_login_as(page, "marketing_manager", locale=locale)
    for path in MANAGER_PAGES:
        audit(path)
    assert violations == []


def focused(page) -> dict:
    """What has the keyboard focus: its id, accessible label and text."""
    return page.evaluate(
        """() => {
            const e = document.activeElement;
            return {id: e.id, tag: e.tagName, label: e.getAttribute('aria-label') || '',
                    text: e.textContent.trim(), name: e.getAttribute('name') || ''};
        }"""
    )


def tab_to(page, wanted, limit: int = 250) -> dict:
    """Press Tab until the focused element is the one `wanted(focused)` picks; fail if never."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        current = focused(page)
        if wanted(current):
            return current
    raise AssertionError("Tab never reached the element")


@pytest.mark.browser
def test_keyboard_alone_adds_and_removes_a_step_and_a_test_address(
    app, browser_page, browser_login_as, live_server, sample_data
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    campaign_url = live_server + f"/campaigns/{sample_data['campaign']}"
    page.goto(campaign_url)

    page.on("dialog", lambda dialog: dialog.accept())  # the removal asks first

    # A delay step at the end of the flow: "+" on the last edge, the kind, the days, Enter.
    # Each answer replaces the canvas; the focus goes to the heading of its side panel.
    tab_to(page, lambda f: f["tag"] == "A" and f["label"].startswith("在第") and "之后添加一步" in f["label"])
    page.keyboard.press("Enter")
    expect(page.locator("#canvas-panel-title")).to_be_focused()
    assert focused(page)["text"] == "在此添加一步"
    tab_to(page, lambda f: f["tag"] == "A" and f["text"] == "等待")
    page.keyboard.press("Enter")
    expect(page.locator("#canvas-panel-title")).to_be_focused()
    tab_to(page, lambda f: f["id"] == "step-days")
    page.keyboard.press("Control+A")
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    expect(page.locator("#canvas-panel-title")).to_contain_text("等待")
    expect(page.locator("#canvas-panel-title")).to_be_focused()
    number = re.match(r"第 (\d+) 步", focused(page)["text"]).group(1)
    expect(page.locator("#announcer")).to_contain_text(f"第 {number} 步已添加。")
    steps_before = page.locator(".canvas-node").count()

    # Removing it: the button says which step it removes; the focus lands on the panel, which
    # now heads the list of steps, and the removal is read out.
    button = tab_to(page, lambda f: f["tag"] == "BUTTON" and f["label"].startswith(f"移除第 {number} 步："))
    assert button["label"] == f"移除第 {number} 步：等待 3 天"
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_contain_text(f"第 {number} 步已移除。")
    expect(page.locator("#canvas-panel-title")).to_be_focused()
    assert page.locator(".canvas-node").count() == steps_before - 1

    # A test address: type it, press Enter; the list of addresses, new one included, has the focus.
    tab_to(page, lambda f: f["id"] == "address")
    page.keyboard.type("wang@example.com")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"#test-addresses$"))
    page.wait_for_load_state()
    addresses = focused(page)
    assert addresses["id"] == "test-addresses" and "wang@example.com" in addresses["text"]

    address_id = page.locator("#test-addresses .tag").get_attribute("id")
    button = tab_to(page, lambda f: f["tag"] == "BUTTON" and "wang@example.com" in f["label"])
    assert button["label"] == "移除测试地址 wang@example.com"
    page.keyboard.press("Enter")
    expect(page.locator(f"#{address_id}")).to_have_count(0)
    expect(page.locator("#test-addresses")).to_be_focused()
    assert "wang@example.com" not in page.locator("#test-addresses").inner_text()


@pytest.mark.browser
def test_htmx_refusal_focuses_the_invalid_field_and_the_result_is_announced(
    app, browser_page, browser_login_as, live_server, sample_data
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    page.goto(live_server + "/audience/tags")

    # A blank tag passes the browser's own check but not the server's: the 422 page comes back
    # through htmx and the focus is on the field that needs attention, its error read with it.
    tab_to(page, lambda f: f["id"] == "tag")
    page.keyboard.type(" ")
    tab_to(page, lambda f: f["tag"] == "BUTTON" and f["text"] == "保存并执行")
    page.keyboard.press("Enter")
    expect(page.locator('#tag[aria-invalid="true"]')).to_have_count(1)
    expect(page.locator("#tag")).to_be_focused()
    assert page.locator("#tag").get_attribute("aria-describedby") == "tag-error"
    expect(page.locator("#tag-error")).not_to_be_empty()

    # Saved: the page is replaced through htmx and the confirmation is read out politely.
    page.keyboard.type("新客户")
    page.keyboard.press("Enter")
    expect(page.locator("#announcer")).to_contain_text("标签规则已保存")
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
    assert focused(page)["id"] == "tag"


@pytest.mark.browser
def test_block_editor_focuses_the_new_block_and_the_editor_after_a_removal(
    app, browser_page, browser_login_as, live_server
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("焦点测试邮件")
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    column = page.locator("#block-editor .block-column").first
    before = column.locator(".block").count()

    # Add a block with the keyboard: the new block has the focus once the editor is re-drawn.
    add = column.get_by_role("button", name="添加积木到版块 1 第 1 栏")
    add.focus()
    page.keyboard.press("Enter")
    expect(column.locator(".block")).to_have_count(before + 1)
    new_block = column.locator(".block").nth(before)
    expect(new_block).to_be_focused()

    # Delete it: the button is gone with the block, so the editor itself has the focus.
    delete = new_block.get_by_role("button", name=re.compile(rf"^删除版块 1 第 1 栏的第 {before + 1} 个积木"))
    delete.focus()
    page.keyboard.press("Enter")
    expect(column.locator(".block")).to_have_count(before)
    expect(page.locator("#block-editor")).to_be_focused()

    # A refusal with nothing to show (the version left the draft state meanwhile) is said, not
    # swallowed: in the page's message area and in the live region.
    version_id = int(re.search(r"/versions/(\d+)/edit", page.url).group(1))
    with app.app_context():
        db.session.get(AssetVersion, version_id).status = VersionStatus.IN_REVIEW
        db.session.commit()
    add.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#flash .flash-error")).to_have_text("无法处理该请求。")
    expect(page.locator("#announcer")).to_have_text("无法处理该请求。")
