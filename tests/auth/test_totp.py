"""The break-glass administrator's own second factor: TOTP enrolled at the first password change,
asked at every local sign-in and before high-risk actions, with one-time recovery codes."""

import re
import time
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from portal.audience.models import Contact
from portal.audit import AuditEvent
from portal.auth.mfa import RECOVERY_CODE_COUNT
from portal.auth.models import RecoveryCode, User
from portal.auth.service import LOCAL_SIGN_IN_MAX_FAILURES
from portal.extensions import db
from tests.auth.test_local import run_create_admin

EMAIL = "breakglass@example.com"
NEW_PASSWORD = "a-much-longer-passphrase"


@pytest.fixture(autouse=True)
def _whole_time_step():
    """The tests use the codes of the previous, current and next 30-second steps: start them
    far enough from a step's end that "current" stays current while a test runs."""
    if time.time() % 30 > 22:
        time.sleep(30 - time.time() % 30 + 0.2)


def code(secret: str, steps_from_now: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC), counter_offset=steps_from_now)


def enrolled_admin(app, client) -> tuple[str, list[str]]:
    """Create the break-glass account and walk its first sign-in: password change, enrolment.
    Returns its TOTP secret and recovery codes; the client is left signed in. The enrolment
    uses the previous step's code, so the current and the next one are still unused."""
    password = run_create_admin(app)
    assert client.post("/auth/local", data={"email": EMAIL, "password": password}).status_code == 303
    changed = client.post("/auth/password", data={"current": password, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert changed.headers["Location"] == "/auth/two-factor"
    page = client.get("/auth/two-factor").get_data(as_text=True)
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    done = client.post("/auth/two-factor", data={"code": code(secret, -1)})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", done.get_data(as_text=True))
    return secret, codes


def sign_in_with_password(client, password: str = NEW_PASSWORD):
    return client.post("/auth/local", data={"email": EMAIL, "password": password})


def test_enrolment_at_the_first_password_change_shows_a_qr_code_then_recovery_codes_once(app, client):
    password = run_create_admin(app)
    sign_in_with_password(client, password)
    new = {"current": password, "new": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    assert client.post("/auth/password", data=new).headers["Location"] == "/auth/two-factor"
    assert client.get("/").headers["Location"] == "/auth/two-factor"  # nothing else before it
    page = client.get("/auth/two-factor").get_data(as_text=True)
    assert "<svg" in page and "data:" not in page  # the QR code is markup in the page
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    wrong = client.post("/auth/two-factor", data={"code": "000000" if code(secret) != "000000" else "111111"})
    assert wrong.status_code == 422
    done = client.post("/auth/two-factor", data={"code": code(secret)})
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", done.get_data(as_text=True))
    assert len(set(codes)) == RECOVERY_CODE_COUNT == 10
    assert client.get("/").status_code == 200
    again = client.get("/auth/two-factor").get_data(as_text=True)
    assert not any(recovery in again for recovery in codes)  # shown once
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        assert user.totp_secret == secret
        hashes = list(db.session.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id)))
        assert len(hashes) == 10 and all(h.startswith("scrypt:") for h in hashes)
        assert not any(recovery.replace("-", "") in h for recovery in codes for h in hashes)
    assert "totp.enrolled" in {event.action for event in events(app)}


def events(app) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_every_local_sign_in_asks_for_a_code_and_refuses_a_wrong_or_reused_one(app, client):
    secret, _codes = enrolled_admin(app, client)
    browser = app.test_client()
    password_step = sign_in_with_password(browser)
    assert password_step.status_code == 303 and password_step.headers["Location"].startswith("/auth/local/code")
    assert browser.get("/").status_code == 302  # the password alone signs nobody in
    wrong = "000000" if code(secret) != "000000" else "111111"
    assert browser.post("/auth/local/code", data={"code": wrong}).status_code == 422
    assert browser.post("/auth/local/code", data={"code": code(secret)}).status_code == 303
    assert browser.get("/").status_code == 200
    # The same code again, on another browser with the right password: refused.
    other = app.test_client()
    sign_in_with_password(other)
    assert other.post("/auth/local/code", data={"code": code(secret)}).status_code == 422
    assert other.get("/").status_code == 302
    # An older code than the last one accepted: refused too (the enrolment used step -1).
    assert other.post("/auth/local/code", data={"code": code(secret, -1)}).status_code == 422
    assert other.post("/auth/local/code", data={"code": code(secret, 1)}).status_code == 303
    failures = [e.details for e in events(app) if e.action == "sign_in.failure"]
    assert [f["reason"] for f in failures] == ["bad_code"] * 3
    assert [f["replayed"] for f in failures] == [False, True, True]


def test_wrong_codes_lock_the_account_like_wrong_passwords(app, client):
    secret, _codes = enrolled_admin(app, client)
    browser = app.test_client()
    sign_in_with_password(browser)
    wrong = "000000" if code(secret) != "000000" else "111111"
    for _ in range(LOCAL_SIGN_IN_MAX_FAILURES):
        browser.post("/auth/local/code", data={"code": wrong})
    assert "local_sign_in.locked" in {event.action for event in events(app)}
    late = app.test_client()
    assert sign_in_with_password(late).status_code == 422  # locked: even the right password
    # The right code cannot undo the lockout either, and the sign-in starts again from the password.
    assert browser.post("/auth/local/code", data={"code": code(secret)}).status_code == 422
    assert browser.get("/auth/local/code").headers["Location"].startswith("/auth/local")
    assert browser.get("/").status_code == 302


def test_recovery_codes_sign_in_once_each(app, client):
    _secret, codes = enrolled_admin(app, client)
    first = app.test_client()
    sign_in_with_password(first)
    assert first.post("/auth/local/code", data={"code": codes[0].upper()}).status_code == 303
    assert first.get("/").status_code == 200
    second = app.test_client()
    sign_in_with_password(second)
    assert second.post("/auth/local/code", data={"code": codes[0]}).status_code == 422
    assert second.post("/auth/local/code", data={"code": codes[1]}).status_code == 303
    assert "剩余 8 个恢复码" in first.get("/auth/two-factor").get_data(as_text=True)


def test_a_local_high_risk_action_needs_a_fresh_code(app, client):
    secret, _codes = enrolled_admin(app, client)
    with app.app_context():
        db.session.add(Contact(email="wang@example.com", name="王五"))
        db.session.commit()
        contact_id = db.session.scalar(select(Contact.id))
    with client.session_transaction() as session:
        session["second_factor_at"] = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    back = f"/audience/contacts/{contact_id}"
    asked = client.post(f"/audience/contacts/{contact_id}/erase", headers={"Referer": back})
    assert asked.status_code == 302 and asked.headers["Location"] == f"/auth/confirm?next={back}"
    wrong = "000000" if code(secret) != "000000" else "111111"
    assert client.post(f"/auth/confirm?next={back}", data={"code": wrong}).status_code == 422
    confirmed = client.post(f"/auth/confirm?next={back}", data={"code": code(secret)})
    assert confirmed.status_code == 303 and confirmed.headers["Location"] == back
    assert client.post(f"/audience/contacts/{contact_id}/erase").status_code == 303
    with app.app_context():
        assert db.session.get(Contact, contact_id).email is None
    refused, confirmed_events = (
        [e for e in events(app) if e.action == "step_up.refused"],
        [e for e in events(app) if e.action == "step_up.confirmed"],
    )
    assert refused[0].details["reason"] == "bad_code" and confirmed_events[0].details["factor"] == "totp"


def test_resetting_the_account_makes_it_enrol_again(app, client):
    enrolled_admin(app, client)
    password = run_create_admin(app)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == EMAIL))
        assert user.totp_secret is None
        assert db.session.scalar(select(RecoveryCode).where(RecoveryCode.user_id == user.id)) is None
    browser = app.test_client()
    assert sign_in_with_password(browser, password).headers["Location"] == "/auth/password"
