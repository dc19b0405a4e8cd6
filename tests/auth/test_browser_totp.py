"""The break-glass administrator's first sign-in in a real browser: one-time password, new
password, QR code, code, recovery codes; nothing the Content-Security-Policy blocks."""

import re

import pyotp
import pytest

from tests.auth.test_local import run_create_admin


@pytest.mark.browser
def test_break_glass_first_sign_in_enrols_the_authenticator_app_in_the_browser(app, browser_page, live_server):
    password = run_create_admin(app)
    page = browser_page
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(live_server + "/auth/local")
    page.fill("input[name=email]", "breakglass@example.com")
    page.fill("input[name=password]", password)
    page.click("button.button")
    page.wait_for_url(re.compile(r".*/auth/password$"))
    new = "a-much-longer-passphrase"
    page.fill("input[name=current]", password)
    page.fill("input[name=new]", new)
    page.fill("input[name=confirm]", new)
    page.click("button.button")
    page.wait_for_url(re.compile(r".*/auth/two-factor$"))
    assert page.locator("figure.qr-code svg").is_visible()
    secret = page.locator("#totp-secret").inner_text()
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.click("button.button")
    page.locator("#recovery-codes").wait_for()
    assert page.locator("ul.recovery-codes li").count() == 10
    assert page.locator("h1").inner_text() == "您的恢复码"
    page.click("#recovery-codes a.button")
    page.wait_for_url(re.compile(re.escape(live_server) + r"/$"))
    assert blocked == []
