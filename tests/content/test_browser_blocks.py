"""An operations specialist builds an email from blocks in Chinese, with an uploaded picture,
previews it on a phone, fixes what the live checks find, and submits it; the test mail that
leaves through the SMTP server carries the picture's public URL, its alt text, the unsubscribe
link and a plain-text part with the link addresses."""

import email
import email.policy
import io
import re
import time

import pytest
import requests
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from sqlalchemy import select

from portal.auth.models import User
from portal.extensions import db

SHOTS = None  # a folder, to keep screenshots of the journey while working on the page


def user(user_id):
    return db.session.get(User, user_id)


def shot(page, name):
    if SHOTS:
        page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)


def wait_until(page, expression, seconds=15):
    """Poll the page for a condition (the editor keeps re-rendering its preview as it is used)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if page.evaluate(expression):
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"never true: {expression}\n{page.evaluate('document.body.innerText')}")


def preview_until(page, condition, seconds=15):
    """Poll the email preview's HTML for a condition. The preview is a sandboxed frame served
    from its own URL (the page's scripts cannot read it), so Playwright reads it."""
    deadline = time.monotonic() + seconds
    html = ""
    while time.monotonic() < deadline:
        try:
            html = page.frame_locator("#preview-frame").locator("body").inner_html(timeout=2000)
        except PlaywrightError:  # the frame is being replaced by the next render
            html = ""
        if condition(html):
            return
        page.wait_for_timeout(200)
    raise AssertionError(f"the preview never matched:\n{html}")


@pytest.fixture
def public_base_url(app, live_server):
    """Mail clients fetch pictures from the portal's public address: here, the live server."""
    previous = app.config["PUBLIC_BASE_URL"]
    app.config["PUBLIC_BASE_URL"] = live_server
    yield live_server
    app.config["PUBLIC_BASE_URL"] = previous


@pytest.mark.browser
def test_build_an_email_from_blocks_preview_on_a_phone_fix_a_check_and_submit_in_chinese(
    app, browser_page, browser_login_as, live_server, public_base_url, make_user, smtp, start_worker, tmp_path
):
    page = browser_page
    problems = []

    def console(message):
        # Chromium asks for a favicon the portal does not have; that is not the editor's doing.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            problems.append(f"{message.text} {message.location}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "response",
        lambda response: problems.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    author_id = browser_login_as(page, "operations_specialist", name="李运营")

    # A picture for the email, uploaded to the media library.
    poster = tmp_path / "春季海报.png"
    Image.new("RGB", (1600, 800), (26, 115, 232)).save(poster)
    page.goto(live_server + "/content/media")
    page.get_by_label("图片", exact=True).set_input_files(str(poster))
    page.locator("#folder").fill("春季活动")
    page.get_by_role("button", name="上传", exact=True).click()
    page.wait_for_load_state()
    assert "已上传" in page.locator("#flash, .flash").first.inner_text()
    assert "1200 × 600" in page.locator("#media-grid").inner_text()
    shot(page, "0-media")

    # A new email starts in the block editor.
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("春季新品邮件")
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))
    page.get_by_label("主题").fill("{{ contact.name | default('客户') }}，春季新品抢先看")
    editor = page.locator("#block-editor")
    editor.locator(".block-heading input[name$='.text']").fill("春季新品发布")
    rich_text = editor.locator(".block-text .rich-text-area").first
    rich_text.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("三款新品本周上市，欢迎了解。")
    wait_until(page, "document.querySelector('#preview').innerText.includes('王小明，春季新品抢先看')")

    # Add a picture block from the library; the live check flags the missing alt text.
    first_column = editor.locator(".block-column").first
    first_column.locator("select[name^='add.']").select_option(label="图片")
    first_column.get_by_role("button", name="添加积木").click()
    page.wait_for_selector("#block-editor .block-image")
    image_block = page.locator("#block-editor .block-image")
    image_block.get_by_label("素材库中的图片").select_option(label="春季海报.png · 春季活动")
    wait_until(page, "document.querySelector('#preview').innerText.includes('图片缺少替代文字')")
    live_checks = page.locator("#live-checks")
    assert "有链接还没有填写地址" in live_checks.inner_text()  # the starter button points nowhere yet
    image_id = image_block.get_attribute("data-block")
    assert live_checks.locator(f"a[href='#block-{image_id}']").count() == 1  # it points at the block
    shot(page, "1-finding")

    # Fix both findings; the checks clear as the author types.
    image_block.get_by_label("替代文字（图片未显示时读出）").fill("春季新品海报")
    button_block = page.locator("#block-editor .block-button")
    button_block.locator("input[name$='.href']").fill("https://www.example.com/spring")
    wait_until(
        page,
        "!['图片缺少替代文字', '有链接还没有填写地址']"
        ".some((t) => document.querySelector('#preview').innerText.includes(t))",
    )

    # The preview at a phone's real width.
    page.get_by_role("button", name="手机屏幕").click()
    wait_until(page, "document.getElementById('preview-frame').getBoundingClientRect().width === 375")
    frame = page.frame_locator("#preview-frame")
    assert "春季新品发布" in frame.locator("body").inner_text()
    assert frame.locator("img[alt='春季新品海报']").count() == 1
    shot(page, "2-mobile")

    page.get_by_role("button", name="保存并提交审核").click()
    page.wait_for_url(re.compile(r"/content/\d+$"))
    assert "审核中" in page.locator(".page-head").inner_text()
    assert not problems, problems

    # Approved by a reviewer, then sent as a test through a real worker and SMTP server.
    from portal.audience.models import Contact, Segment
    from portal.campaigns import publishing
    from portal.campaigns import service as campaigns
    from portal.campaigns.models import TestSend
    from portal.content import service as content
    from portal.content.models import AssetVersion

    with app.app_context():
        version = db.session.scalar(select(AssetVersion).order_by(AssetVersion.id.desc()))
        content.approve(user(make_user("reviewer")), version.id)
        db.session.add(Contact(email="c@example.com", province="上海市"))
        segment = Segment(
            name="上海", rules={"op": "and", "items": [{"field": "province", "operator": "eq", "value": "上海"}]}
        )
        db.session.add(segment)
        db.session.commit()
        manager = user(make_user("marketing_manager"))
        campaign = campaigns.create_campaign(manager, {"name": "春季新品", "segment_id": segment.id})
        step = campaigns.add_step(manager, campaign.id, "message", channel="email", content_version_id=version.id)
        publishing.add_test_address(manager, "wang@example.com")
        publishing.start_test_send(manager, campaign.id, [step.id])
    start_worker()
    deadline = time.monotonic() + 30
    while not smtp.messages and time.monotonic() < deadline:
        time.sleep(0.2)
    with app.app_context():
        assert db.session.scalar(select(TestSend.status)) == "sent"
    message = email.message_from_bytes(smtp.messages[0]["data"], policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()

    picture = re.search(r'<img[^>]*src="(http[^"]+/m/[0-9a-f]{32}\.png)"', html)
    assert picture, "the picture's public URL is in the HTML"
    fetched = requests.get(picture.group(1), timeout=10)  # no session, as a mail client
    assert fetched.status_code == 200 and fetched.headers["Content-Type"] == "image/png"
    assert "max-age=31536000" in fetched.headers["Cache-Control"]
    assert Image.open(io.BytesIO(fetched.content)).size == (1200, 600)
    assert 'alt="春季新品海报"' in html
    unsubscribe = re.search(r'<a href="([^"]+)"[^>]*>退订</a>', html)
    assert unsubscribe and "/u/" in unsubscribe.group(1)
    assert "王小明，春季新品抢先看" in message["Subject"]
    assert re.search(r"了解更多 \(https?://\S+\)", text), text
    assert re.search(r"退订 \(https?://\S+/u/\S+\)", text), text
    assert "[春季新品海报]" in text
    assert author_id


@pytest.mark.browser
def test_variable_picker_drag_to_reorder_and_undo_in_chinese(app, browser_page, browser_login_as, live_server):
    page = browser_page
    browser_login_as(page, "operations_specialist", name="李运营")
    page.goto(live_server + "/content/new")
    page.get_by_label("名称").fill("拖动与变量")
    page.get_by_label("起始内容").select_option(label="线上研讨会邀请")
    page.get_by_role("button", name="创建并编辑").click()
    page.wait_for_url(re.compile(r"/content/versions/\d+/edit$"))

    # The picker inserts the variable where the author was typing, with a fallback.
    heading = page.locator("#block-editor .block-heading input[name$='.text']").first
    heading.fill("欢迎，")
    heading.click()
    page.keyboard.press("End")
    page.get_by_label("插入变量").select_option(label="联系人姓名")
    assert heading.input_value() == '欢迎，{{ contact.name | default("客户") }}'
    preview_until(page, lambda html: "欢迎，王小明" in html)

    # An unknown variable is flagged as it is typed.
    heading.fill("欢迎，{{ contact.nmae }}")
    wait_until(page, "document.querySelector('#preview').innerText.includes('contact.nmae')")
    heading.fill("欢迎")

    # Drag the button above the heading (both in view, as a person would see them).
    page.set_viewport_size({"width": 1280, "height": 2200})
    column = page.locator("#block-editor .block-column").first
    kinds = (
        "[...document.querySelector('#block-editor .block-column').querySelectorAll('.block')].map(b => b.classList[1])"
    )
    assert page.evaluate(kinds)[:3] == ["block-heading", "block-text", "block-button"]
    source = column.locator(".block-button .block-handle").bounding_box()
    target = column.locator(".block-heading").bounding_box()
    page.mouse.move(source["x"] + 4, source["y"] + 4)
    page.mouse.down()
    for step in range(1, 11):  # a person's drag, in steps, to the top of the heading
        page.mouse.move(source["x"] + 4, source["y"] + (target["y"] + 5 - source["y"]) * step / 10)
        page.wait_for_timeout(30)
    page.mouse.up()
    assert page.evaluate(kinds)[0] == "block-button"
    preview_until(page, lambda html: -1 < html.find("立即报名") < html.find("<h1"))

    # Delete a block, then undo it.
    column.locator(".block-text").get_by_role("button", name="删除").click()
    wait_until(page, "!document.querySelector('#block-editor .block-column .block-text')")
    page.get_by_role("button", name="撤销上一步").click()
    wait_until(page, "!!document.querySelector('#block-editor .block-column .block-text')")
