"""The strict Content-Security-Policy breaks nothing: the main pages load in Chromium without a
single violation, htmx included, and the email preview still shows the message's own styles."""

import pytest

from portal.auth.models import User
from portal.extensions import db

# Registered before any page script runs: every violation the browser reports is kept.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const what = event.blockedURI || "inline";
  window.__cspViolations.push(event.violatedDirective + " " + what + " at " + location.pathname);
});
"""

EMAIL_WITH_STYLES = (
    '<html><body><p style="color:#c00">{{ contact.name | default("客户") }}，您好！</p>'
    '<p><a href="{{ unsubscribe_url }}">退订</a></p></body></html>'
)


@pytest.fixture
def sample_data(app, make_user):
    """A draft email with inline styles, a contact, a campaign: something on every page."""
    from portal.content import service as content
    from tests.factories import add_contacts, scheduled_campaign, segment_of

    with app.app_context():
        author = db.session.get(User, make_user("marketing_manager"))
        asset = content.create_asset(author, "email", "新品发布")
        content.save_draft(
            author,
            asset.latest.id,
            {"subject": "新品上市", "html_body": EMAIL_WITH_STYLES, "text_body": "{{ contact.name }}，您好"},
        )
        contact_id = add_contacts(1)[0]
        campaign_id = scheduled_campaign(author, segment_of(), [])
        return {"asset": asset.id, "version": asset.latest.id, "contact": contact_id, "campaign": campaign_id}


def visit(page, url: str, problems: list[str]) -> None:
    response = page.goto(url)
    assert response is not None and response.status < 400, (url, response and response.status)
    page.wait_for_load_state("networkidle")
    problems.extend(page.evaluate("window.__cspViolations"))


@pytest.mark.browser
def test_main_pages_load_without_a_csp_violation(app, browser_page, browser_login_as, live_server, sample_data):
    page = browser_page
    page.context.add_init_script(RECORD_VIOLATIONS)
    problems: list[str] = []
    page.on(
        "console",
        lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None,
    )
    visit(page, live_server + "/auth/login", problems)

    browser_login_as(page, "administrator")
    for path in ("/admin/users", "/admin/sso-mapping", "/admin/roles", "/admin/audit"):
        visit(page, live_server + path, problems)

    browser_login_as(page, "marketing_manager")
    for path in (
        "/",
        "/notifications",
        "/content/",
        f"/content/{sample_data['asset']}",
        "/audience/contacts",
        f"/audience/contacts/{sample_data['contact']}",
        "/audience/segments",
        "/audience/segments/new",
        "/campaigns/",
        f"/campaigns/{sample_data['campaign']}",
        "/reports/",
        "/reports/tracking",
    ):
        visit(page, live_server + path, problems)

    # The editor: typing re-renders the preview through htmx; the email keeps its inline style.
    visit(page, live_server + f"/content/versions/{sample_data['version']}/edit", problems)
    page.fill("input[name=subject]", "新品上市啦")
    page.wait_for_load_state("networkidle")
    frame = page.frame_locator("#preview-frame")
    assert frame.locator("p").first.evaluate("element => getComputedStyle(element).color") == "rgb(204, 0, 0)"
    page.get_by_role("button", name="手机屏幕").click()
    assert "preview-mobile" in (page.locator("#preview-frame").get_attribute("class") or "")
    problems.extend(page.evaluate("window.__cspViolations"))
    assert problems == []
