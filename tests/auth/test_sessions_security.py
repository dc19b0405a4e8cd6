"""Sessions: anonymous visits keep nothing on the server; a password change and the end of a
session end what hangs on them."""

import re

from sqlalchemy import func, select

from portal.auth.models import WebSession
from portal.extensions import db
from tests.auth.test_local import run_create_admin

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def session_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(WebSession))


def test_anonymous_visits_write_no_session_row(app, demo_mapping, sso_sign_in, client):
    for _ in range(5):
        visitor = app.test_client()
        assert visitor.get("/auth/login").status_code == 200
        assert visitor.get_cookie("session") is not None  # the CSRF token travels in a signed cookie
        visitor.post("/locale", data={"locale": "en", "next": "/auth/login"})
        assert visitor.get("/auth/sso").status_code == 302
    assert session_rows(app) == 0
    sso_sign_in("manager@example.com")
    assert session_rows(app) == 1


def test_a_forged_anonymous_cookie_cannot_carry_a_user(app, make_user):
    from itsdangerous import URLSafeTimedSerializer

    from portal.auth.sessions import ANONYMOUS_SALT

    user_id = make_user("administrator")
    forged = URLSafeTimedSerializer(app.secret_key, salt=ANONYMOUS_SALT).dumps({"_user_id": str(user_id)})
    visitor = app.test_client()
    visitor.set_cookie("session", forged)
    assert visitor.get("/").status_code == 302  # signed by us, but a user id only ever lives in a row


def test_changing_the_local_password_ends_the_accounts_other_sessions(app):
    password = run_create_admin(app)
    first, second = app.test_client(), app.test_client()
    for browser in (first, second):
        assert (
            browser.post("/auth/local", data={"email": "breakglass@example.com", "password": password}).status_code
            == 303
        )
    assert session_rows(app) == 2
    new = "a-much-longer-passphrase"
    assert first.post("/auth/password", data={"current": password, "new": new, "confirm": new}).status_code == 303
    assert first.get("/auth/two-factor").status_code == 200  # still signed in, enrolling its second factor
    assert second.get("/auth/two-factor").status_code == 302  # its session ended with the old password
    assert session_rows(app) == 1


def test_csrf_tokens_end_with_their_session(make_portal):
    portal = make_portal(WTF_CSRF_ENABLED=True)
    password = run_create_admin(portal)
    browser = portal.test_client()

    def token(path: str) -> str:
        return CSRF.search(browser.get(path).get_data(as_text=True)).group(1)

    def sign_in() -> None:
        answer = browser.post(
            "/auth/local",
            data={"email": "breakglass@example.com", "password": password, "csrf_token": token("/auth/local")},
        )
        assert answer.status_code == 303

    anonymous_token = token("/auth/local")
    sign_in()
    change = {"current": password, "new": "a-much-longer-passphrase", "confirm": "a-much-longer-passphrase"}
    # The token of the anonymous page did not survive the sign-in...
    assert browser.post("/auth/password", data={**change, "csrf_token": anonymous_token}).status_code == 400
    first_session_token = token("/auth/password")
    assert browser.post("/auth/logout", data={"csrf_token": first_session_token}).status_code == 303
    sign_in()
    # ...and the signed-in session's token did not survive its session.
    assert browser.post("/auth/password", data={**change, "csrf_token": first_session_token}).status_code == 400
    assert browser.post("/auth/password", data={**change, "csrf_token": token("/auth/password")}).status_code == 303
