"""Sign-in against a spec-strict provider run as its own process: claims only at userinfo,
groups only for the `groups` scope, PKCE required, client_secret_post, registered URIs only."""

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import select

from portal.admin.service import grants_of
from portal.audit import AuditEvent
from portal.auth.models import User
from portal.dev.identities import DEMO_IDENTITIES
from portal.extensions import db
from tests.auth.conftest import STRICT_CLIENT, Browser, start_strict_provider, stop_process, strict_settings


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def id_token_of(portal_client) -> str:
    with portal_client.session_transaction() as session:
        return session["id_token"]


@pytest.mark.parametrize("identity", DEMO_IDENTITIES, ids=lambda identity: str(identity["role"]))
def test_each_role_signs_in_when_claims_come_only_from_userinfo(strict_portal, demo_mapping, identity):
    browser = Browser(strict_portal.test_client())
    answer = browser.sign_in(str(identity["sub"]))
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    # The ID token held no email, name or groups: they can only have come from userinfo.
    assert not {"email", "name", "groups"} & set(jwt_claims(id_token_of(browser.portal)))
    with strict_portal.app_context():
        user = db.session.scalar(select(User).where(User.sso_subject == identity["sub"]))
        assert user.email == identity["email"] and user.name == identity["name"]
        assert grants_of(user.id) == {identity["role"]: "sso"}
        assert user.sso_groups == identity["groups"]
    assert browser.portal.get("/").status_code == 200


def test_person_whose_groups_map_to_no_role_gets_no_access(strict_portal, demo_mapping):
    for subject in ("nogroups@example.com", "intern@example.com"):
        answer = Browser(strict_portal.test_client()).sign_in(subject)
        assert answer.status_code == 403
        assert "没有营销平台的访问权限" in answer.get_data(as_text=True)


def test_absent_groups_claim_is_refused_and_keeps_roles(make_portal, strict_provider, demo_mapping):
    configured = make_portal(**strict_settings(strict_provider))
    assert Browser(configured.test_client()).sign_in("admin@example.com").status_code == 302
    # The same provider, but the portal forgot the `groups` scope: no groups claim arrives.
    without_scope = make_portal(**{**strict_settings(strict_provider), "OIDC_SCOPES": "openid email profile"})
    answer = Browser(without_scope.test_client()).sign_in("admin@example.com")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 403
    assert "请联系贵公司的 IT 部门" in page and "您的权限没有改变" in page
    with without_scope.app_context():
        admin = db.session.scalar(select(User).where(User.email == "admin@example.com"))
        assert grants_of(admin.id) == {"administrator": "sso"}
        assert admin.sso_groups == ["portal-admins"]
        event = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "sign_in.failure").order_by(AuditEvent.id.desc())
        ).first()
    assert event.details["reason"] == "groups_missing"
    assert event.details["expected"] == ["groups"]
    assert "email" in event.details["claims"] and "groups" not in event.details["claims"]


def test_wrong_token_endpoint_auth_method_is_a_clear_refusal_not_a_500(make_portal, strict_provider, demo_mapping):
    basic = make_portal(**{**strict_settings(strict_provider), "OIDC_TOKEN_AUTH_METHOD": "client_secret_basic"})
    answer = Browser(basic.test_client()).sign_in("manager@example.com")
    assert answer.status_code == 400
    assert "无法验证" in answer.get_data(as_text=True)


def test_provider_requires_pkce_with_s256(strict_provider):
    query = {
        "response_type": "code",
        "client_id": STRICT_CLIENT["client_id"],
        "redirect_uri": STRICT_CLIENT["redirect_uris"][0],
        "scope": "openid",
        "state": "s",
        "nonce": "n",
    }
    plain = requests.get(f"{strict_provider}/authorize", params=query, allow_redirects=False, timeout=10)
    assert plain.status_code == 302 and "error=invalid_request" in plain.headers["Location"]
    unregistered = {**query, "redirect_uri": "http://127.0.0.1:5000/elsewhere"}
    answer = requests.get(f"{strict_provider}/authorize", params=unregistered, allow_redirects=False, timeout=10)
    assert answer.status_code == 400  # never redirected to an unregistered URI


def test_sign_out_ends_both_sessions_and_returns_to_the_registered_uri(strict_portal, demo_mapping):
    browser = Browser(strict_portal.test_client())
    browser.sign_in("ops@example.com")
    id_token = id_token_of(browser.portal)
    answer = browser.portal.post("/auth/logout")
    end_session = answer.headers["Location"]
    assert answer.status_code == 303 and end_session.startswith(strict_portal.config["OIDC_ISSUER"] + "/logout")
    query = parse_qs(urlsplit(end_session).query)
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == ["http://127.0.0.1:5000/auth/login"]
    assert (
        browser.provider.get(f"{strict_portal.config['OIDC_ISSUER']}/session", timeout=10).json()["sub"]
        == "ops@example.com"
    )
    back = browser.provider.get(end_session, allow_redirects=False, timeout=10)
    assert back.status_code == 302 and back.headers["Location"].startswith("http://127.0.0.1:5000/auth/login")
    assert browser.provider.get(f"{strict_portal.config['OIDC_ISSUER']}/session", timeout=10).json()["sub"] is None
    assert browser.portal.get("/").status_code == 302


def test_post_logout_redirect_setting_is_sent_and_the_provider_enforces_registration(
    make_portal, strict_provider, demo_mapping
):
    portal = make_portal(**strict_settings(strict_provider), OIDC_POST_LOGOUT_REDIRECT="https://elsewhere.example/bye")
    browser = Browser(portal.test_client())
    browser.sign_in("ops@example.com")
    end_session = browser.portal.post("/auth/logout").headers["Location"]
    assert parse_qs(urlsplit(end_session).query)["post_logout_redirect_uri"] == ["https://elsewhere.example/bye"]
    # Not registered at the provider: it signs the person out but does not redirect.
    assert browser.provider.get(end_session, allow_redirects=False, timeout=10).status_code == 200


def test_provider_down_at_the_callback_gets_the_unreachable_page(make_portal, tmp_path, demo_mapping):
    issuer, process = start_strict_provider(tmp_path)
    try:
        portal = make_portal(**strict_settings(issuer))
        browser = Browser(portal.test_client())
        start = browser.portal.get("/auth/sso")
        location = browser.provider.post(
            start.headers["Location"], data={"sub": "admin@example.com"}, allow_redirects=False, timeout=10
        ).headers["Location"]
    finally:
        stop_process(process)
    answer = browser.portal.get(urlsplit(location).path + "?" + urlsplit(location).query)
    assert answer.status_code == 503
    assert "身份提供方暂时无法访问" in answer.get_data(as_text=True)
    with portal.app_context():
        reasons = [e.details.get("reason") for e in db.session.scalars(select(AuditEvent))]
    assert "provider_unreachable" in reasons


def test_admin_sees_groups_from_recent_sign_ins_and_the_urls_to_register(strict_portal, demo_mapping, make_user):
    for subject in ("manager@example.com", "intern@example.com", "nogroups@example.com"):
        Browser(strict_portal.test_client()).sign_in(subject)
    admin = Browser(strict_portal.test_client())
    admin.sign_in("admin@example.com")
    page = admin.portal.get("/admin/sso-mapping").get_data(as_text=True)
    seen = page[page.index('id="groups-seen"') :]
    assert "<code>/interns</code></td><td>1</td><td>否</td>" in seen
    assert "<code>marketing-managers</code></td><td>1</td><td>是</td>" in seen
    assert "http://127.0.0.1:5000/auth/callback" in page and "http://127.0.0.1:5000/auth/login" in page
    with strict_portal.app_context():
        manager = db.session.scalar(select(User).where(User.email == "manager@example.com"))
    user_page = admin.portal.get(f"/admin/users/{manager.id}").get_data(as_text=True)
    assert "<li><code>marketing-managers</code></li>" in user_page


def test_a_second_sign_in_reuses_the_provider_session_but_reauthentication_asks_again(strict_portal, demo_mapping):
    browser = Browser(strict_portal.test_client())
    browser.sign_in("manager@example.com")
    # An ordinary new sign-in: the provider still knows the person and answers at once.
    again = browser.portal.get("/auth/sso?next=/campaigns/")
    answer = browser.provider.get(again.headers["Location"], allow_redirects=False, timeout=10)
    assert answer.status_code == 302 and "code=" in answer.headers["Location"]
    # A high-risk action: prompt=login and max_age=0 make the provider show its form again.
    confirm = browser.portal.get("/auth/sso?reauth=1&next=/campaigns/")
    assert browser.provider.get(confirm.headers["Location"], allow_redirects=False, timeout=10).status_code == 200
    # ...where the person signs in again, with a second factor this time.
    done = browser.sign_in_at(confirm.headers["Location"], "manager@example.com", amr="pwd otp")
    assert done.status_code == 302 and done.headers["Location"] == "/campaigns/"
