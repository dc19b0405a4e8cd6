"""High-risk actions need a second factor the company provider confirms (its ID token's acr or
amr), at a re-authentication the portal asks for (prompt=login, max_age=0, acr_values)."""

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import requests
from sqlalchemy import select

from portal.audience.models import Segment
from portal.audit import AuditEvent
from portal.extensions import db
from portal.queue import JobRun
from tests.auth.conftest import Browser, callback_path
from tests.conftest import set_provider_person


def a_segment(app) -> int:
    with app.app_context():
        segment = Segment(name="全部客户", rules={"op": "and", "items": []})
        db.session.add(segment)
        db.session.commit()
        return segment.id


def audit_events(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def export_runs(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(JobRun)).all())


def dev_provider_sign_in(app, client, subject: str, claims: dict, path: str):
    """Through the development provider, as `subject` whose ID token carries `claims`."""
    set_provider_person(app.config["OIDC_ISSUER"], subject, claims)
    start = client.get(path)
    assert start.status_code == 302
    answer = requests.post(start.headers["Location"], data={"sub": subject}, allow_redirects=False, timeout=10)
    return start, client.get(callback_path(answer.headers["Location"]))


MANAGER = {"email": "zhao@example.com", "name": "赵经理", "groups": ["marketing-managers"]}


def test_a_token_without_a_second_factor_is_refused_for_a_bulk_export_and_fine_for_ordinary_pages(
    app, client, demo_mapping
):
    segment_id = a_segment(app)
    _start, signed_in = dev_provider_sign_in(app, client, "zhao", {**MANAGER, "amr": ["pwd"]}, "/auth/sso?next=/")
    assert signed_in.status_code == 302
    assert client.get("/audience/segments").status_code == 200  # ordinary pages are fine
    asked = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert asked.status_code == 302
    step_up_path = asked.headers["Location"]
    assert step_up_path.startswith("/auth/sso?reauth=1")
    # The provider re-authenticates with the password only.
    start, refused = dev_provider_sign_in(app, client, "zhao", {**MANAGER, "amr": ["pwd"]}, step_up_path)
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    assert refused.status_code == 403
    page = refused.get_data(as_text=True)
    assert 'id="second-factor-refused"' in page and "身份提供方没有确认第二重验证" in page
    assert client.get("/audience/segments").status_code == 200  # still signed in
    retried = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert retried.status_code == 302 and retried.headers["Location"].startswith("/auth/sso?reauth=1")
    assert export_runs(app) == 0
    [event] = audit_events(app, "step_up.refused")
    assert event.details["amr"] == ["pwd"] and event.details["reason"] == "no_second_factor"
    assert event.target.startswith("user:")


def test_a_step_up_with_a_one_time_code_passes_and_returns_to_the_action(app, client, demo_mapping):
    segment_id = a_segment(app)
    dev_provider_sign_in(app, client, "qian", {**MANAGER, "email": "qian@example.com"}, "/auth/sso?next=/")
    back = f"/audience/segments/{segment_id}"
    _start, stepped_up = dev_provider_sign_in(
        app,
        client,
        "qian",
        {**MANAGER, "email": "qian@example.com", "amr": ["pwd", "otp"]},
        f"/auth/sso?reauth=1&next={back}",
    )
    assert stepped_up.status_code == 302 and stepped_up.headers["Location"] == back
    exported = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert exported.status_code == 303 and exported.headers["Location"].startswith("/jobs/")
    assert export_runs(app) == 1
    [event] = audit_events(app, "step_up.confirmed")
    assert event.details["amr"] == ["pwd", "otp"] and event.details["via"] == "sso"


def test_userinfo_cannot_add_a_second_factor_the_id_token_did_not_state():
    from portal.auth.oidc import merged_claims

    merged = merged_claims({"sub": "a", "amr": ["pwd"]}, {"sub": "a", "amr": ["otp"], "acr": "gold"})
    assert merged["amr"] == ["pwd"] and "acr" not in merged


def test_a_second_factor_given_an_hour_ago_is_too_old(app, client, demo_mapping):
    segment_id = a_segment(app)
    an_hour_ago = int(time.time()) - 3600
    claims = {**MANAGER, "email": "sun@example.com", "amr": ["pwd", "otp"], "auth_time": an_hour_ago}
    _start, signed_in = dev_provider_sign_in(app, client, "sun", claims, "/auth/sso?next=/")
    assert signed_in.status_code == 302
    asked = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert asked.status_code == 302 and asked.headers["Location"].startswith("/auth/sso?reauth=1")
    # The provider answers the step-up from its old session: refused.
    _start, refused = dev_provider_sign_in(app, client, "sun", claims, asked.headers["Location"])
    assert refused.status_code == 400
    assert export_runs(app) == 0
    [failure] = audit_events(app, "sign_in.failure")
    assert failure.details["reason"] == "stale_reauthentication"


def test_a_step_up_is_valid_for_the_freshness_window_only(make_portal, demo_mapping):
    portal = make_portal(STEP_UP_MINUTES=5)
    client = portal.test_client()
    segment_id = a_segment(portal)
    claims = {**MANAGER, "email": "li@example.com", "amr": ["pwd", "mfa"]}
    dev_provider_sign_in(portal, client, "li", claims, "/auth/sso?reauth=1&next=/")
    with client.session_transaction() as session:
        session["second_factor_at"] = (datetime.now(UTC) - timedelta(minutes=6)).isoformat()
    asked = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert asked.status_code == 302 and asked.headers["Location"].startswith("/auth/sso?reauth=1")


def test_without_mfa_required_a_fresh_sign_in_is_enough(make_portal, demo_mapping):
    portal = make_portal(MFA_REQUIRED=False)
    client = portal.test_client()
    segment_id = a_segment(portal)
    claims = {**MANAGER, "email": "zhou@example.com", "amr": ["pwd"]}
    _start, answer = dev_provider_sign_in(portal, client, "zhou", claims, "/auth/sso?reauth=1&next=/")
    assert answer.status_code == 302
    exported = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert exported.status_code == 303


# --- the spec-strict provider: acr_values asked for, acr and amr chosen at its login form -----


def strict_step_up(portal, subject: str, **how: str):
    """Sign in at the strict provider, then step up; returns the step-up request and answer."""
    browser = Browser(portal.test_client())
    assert browser.sign_in(subject).status_code == 302
    start = browser.portal.get("/auth/sso?reauth=1&next=/notifications")
    assert start.status_code == 302
    return browser, start, browser.sign_in_at(start.headers["Location"], subject, **how)


def test_the_strict_provider_is_asked_for_the_configured_level_and_its_acr_passes(
    make_portal, strict_provider, demo_mapping
):
    from tests.auth.conftest import strict_settings

    portal = make_portal(**strict_settings(strict_provider), OIDC_MFA_ACR="gold")
    _browser, start, answer = strict_step_up(portal, "manager@example.com", acr="gold")
    assert parse_qs(urlsplit(start.headers["Location"]).query)["acr_values"] == ["gold"]
    assert answer.status_code == 302 and answer.headers["Location"] == "/notifications"
    [event] = audit_events(portal, "step_up.confirmed")
    assert event.details["acr"] == "gold" and event.details["amr"] == []


def test_the_strict_provider_with_a_lower_level_is_refused(make_portal, strict_provider, demo_mapping):
    from tests.auth.conftest import strict_settings

    portal = make_portal(**strict_settings(strict_provider), OIDC_MFA_ACR="gold")
    _browser, _start, answer = strict_step_up(portal, "manager@example.com", acr="silver", amr="pwd")
    assert answer.status_code == 403 and b'id="second-factor-refused"' in answer.data
    [event] = audit_events(portal, "step_up.refused")
    assert event.details["acr"] == "silver" and event.details["amr"] == ["pwd"]


def test_the_strict_provider_with_amr_pwd_and_otp_passes(strict_portal, demo_mapping):
    _browser, _start, answer = strict_step_up(strict_portal, "manager@example.com", amr="pwd otp")
    assert answer.status_code == 302 and answer.headers["Location"] == "/notifications"


def test_the_strict_provider_with_an_old_auth_time_is_refused(strict_portal, demo_mapping):
    _browser, _start, answer = strict_step_up(strict_portal, "manager@example.com", amr="pwd otp", auth_age="3600")
    assert answer.status_code == 400
    assert audit_events(strict_portal, "step_up.confirmed") == []


def test_the_accepted_amr_values_are_a_setting(make_portal, strict_provider, demo_mapping):
    from tests.auth.conftest import strict_settings

    portal = make_portal(**strict_settings(strict_provider), OIDC_MFA_AMR="hwk")
    _browser, _start, answer = strict_step_up(portal, "manager@example.com", amr="pwd otp")
    assert answer.status_code == 403
    _browser, _start, answer = strict_step_up(portal, "manager@example.com", amr="hwk")
    assert answer.status_code == 302


def test_the_settings_page_shows_the_step_up_policy_in_words(app, client, login_as):
    login_as("administrator")
    page = client.get("/admin/settings").get_data(as_text=True)
    policy = page[page.index('id="step-up-policy"') :]
    assert "批量导出联系人" in policy or "导出联系人" in policy
    assert "10 分钟" in policy
    assert "一次性验证码" in policy and "指纹" in policy
    assert "audience.bulk_export" not in policy and ">otp<" not in policy


def test_a_sign_in_that_already_shows_a_second_factor_counts_as_a_step_up(app, client, demo_mapping):
    segment_id = a_segment(app)
    claims = {**MANAGER, "email": "zheng@example.com", "acr": "urn:okta:loa:1fa:pwd", "amr": ["pwd", "hwk"]}
    dev_provider_sign_in(app, client, "zheng", claims, "/auth/sso?next=/")
    exported = client.post(f"/audience/segments/{segment_id}/export", data={"format": "csv"})
    assert exported.status_code == 303
    [event] = audit_events(app, "step_up.confirmed")
    assert event.details["amr"] == ["pwd", "hwk"] and event.details["acr"] == "urn:okta:loa:1fa:pwd"
    from portal.labels import audit_sentence

    with app.test_request_context():  # the audit log names the methods in words, not codes
        assert "硬件安全密钥" in audit_sentence("step_up.confirmed", event.details)
