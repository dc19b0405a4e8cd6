import pytest
from sqlalchemy import select

from portal.audit import AuditEvent
from portal.auth.models import User
from portal.dev.identities import DEMO_IDENTITIES
from portal.extensions import db
from tests.auth.conftest import callback_path, provider_login


@pytest.mark.parametrize("identity", DEMO_IDENTITIES, ids=lambda identity: identity["role"])
def test_each_demo_person_signs_in_with_the_role_their_group_maps_to(app, client, demo_mapping, sso_sign_in, identity):
    response = sso_sign_in(identity["sub"], next_path="/notifications")
    assert response.status_code == 302
    assert response.headers["Location"] == "/notifications"
    assert client.get("/").status_code == 200
    with app.app_context():
        user = db.session.scalar(select(User).where(User.sso_subject == identity["sub"]))
        assert [role.name for role in user.roles] == [identity["role"]]
        assert user.name == identity["name"]
        assert user.last_sign_in_at is not None
        events = [e.action for e in db.session.scalars(select(AuditEvent).where(AuditEvent.actor_id == user.id))]
        assert "sign_in.success" in events


def test_authorization_request_uses_pkce_and_a_nonce(client):
    location = client.get("/auth/sso").headers["Location"]
    assert "code_challenge_method=S256" in location
    assert "code_challenge=" in location
    assert "nonce=" in location and "state=" in location


def test_tampered_state_is_refused(app, client, demo_mapping):
    start = client.get("/auth/sso")
    location = provider_login(start.headers["Location"], "manager@example.com")
    tampered = location.replace("state=", "state=x")
    response = client.get(callback_path(tampered))
    assert response.status_code == 400
    assert client.get("/").status_code == 302  # still signed out
    with app.app_context():
        failure = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_in.failure"))
        assert failure.details["reason"] == "MismatchingStateError"


def test_unmapped_group_sees_no_access_and_gets_no_session(app, client, sso_sign_in):
    # No mapping loaded: the provider's groups grant nothing.
    response = sso_sign_in("manager@example.com")
    assert response.status_code == 403
    assert b'id="sign-in-refused"' in response.data
    assert client.get("/").status_code == 302
    with app.app_context():
        assert db.session.scalar(select(User).where(User.email == "manager@example.com")) is None
        failure = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_in.failure"))
        assert failure.details["reason"] == "no_access"


def test_unknown_person_typed_into_the_provider_has_no_access(client, demo_mapping, sso_sign_in):
    assert sso_sign_in("stranger@example.com").status_code == 403


def test_deactivated_user_is_refused_even_with_a_valid_token(app, client, demo_mapping, sso_sign_in):
    sso_sign_in("ops@example.com")
    client.post("/auth/logout")
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "ops@example.com"))
        user.active = False
        db.session.commit()
    response = sso_sign_in("ops@example.com")
    assert response.status_code == 403
    assert client.get("/").status_code == 302


def test_roles_follow_the_groups_at_every_sign_in(app, client, demo_mapping, sso_sign_in):
    from portal.admin.service import add_mapping

    sso_sign_in("reviewer@example.com")
    client.post("/auth/logout")
    with app.app_context():
        add_mapping(None, "content-reviewers", "data_analyst")
    sso_sign_in("reviewer@example.com")
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "reviewer@example.com"))
        assert sorted(role.name for role in user.roles) == ["data_analyst", "reviewer"]


def test_sign_in_starts_a_new_session_id(client, demo_mapping, sso_sign_in):
    client.get("/auth/login")
    client.get("/auth/sso")  # an anonymous session now exists
    before = client.get_cookie("session").value
    sso_sign_in("manager@example.com")
    assert client.get_cookie("session").value != before


def test_sign_out_ends_the_session_on_the_server(app, client, demo_mapping, sso_sign_in):
    from tests.conftest import IsolatedClient

    sso_sign_in("manager@example.com")
    stolen = client.get_cookie("session").value
    response = client.post("/auth/logout")
    assert response.status_code == 303
    # RP-initiated logout at the provider, which advertises end_session_endpoint.
    assert "/oauth2/end_session" in response.headers["Location"]
    assert "id_token_hint=" in response.headers["Location"]
    replay = IsolatedClient(app, app.response_class)
    replay.set_cookie("session", stolen)
    assert replay.get("/").status_code == 302


def test_deactivation_ends_existing_sessions_at_once(app, client, make_user, demo_mapping, sso_sign_in):
    from portal.admin.service import set_user_active

    sso_sign_in("ops@example.com")
    assert client.get("/").status_code == 200
    with app.app_context():
        admin = db.session.get(User, make_user("administrator"))
        user = db.session.scalar(select(User).where(User.email == "ops@example.com"))
        set_user_active(admin, user.id, False)
    assert client.get("/").status_code == 302


def test_losing_the_last_role_ends_sessions(app, client, make_user, demo_mapping, sso_sign_in):
    from portal.admin.service import remove_mapping, set_manual_roles
    from portal.auth.models import SsoGroupMapping

    sso_sign_in("ops@example.com")
    with app.app_context():
        admin = db.session.get(User, make_user("administrator"))
        user = db.session.scalar(select(User).where(User.email == "ops@example.com"))
        set_manual_roles(admin, user.id, {"reviewer"})
        set_manual_roles(admin, user.id, set())
        assert client.get("/").status_code == 200  # still holds the SSO role
        mapping = db.session.scalar(select(SsoGroupMapping).where(SsoGroupMapping.group_name == "marketing-ops"))
        remove_mapping(admin, mapping.id)
    # The next sign-in finds no role: refused, and every session of the person ended.
    second = type(client)(app, app.response_class)
    start = second.get("/auth/sso")
    assert second.get(callback_path(provider_login(start.headers["Location"], "ops@example.com"))).status_code == 403
    assert client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("forgery", "name"),
    [
        ({"claims": {"exp": 1_000_000_000, "iat": 999_999_000}}, "expired"),
        ({"claims": {"aud": "another-client"}}, "other audience"),
        ({"claims": {"iss": "http://evil.example"}}, "other issuer"),
        ({"claims": {"nonce": "not-the-one-we-sent"}}, "wrong nonce"),
        ({"bad_signature": True}, "bad signature"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_forged_id_tokens_are_refused(forged_app, forging_provider, forgery, name):
    from portal.demo import demo_sso_mapping

    with forged_app.app_context():
        demo_sso_mapping()
    forging_provider.forgery = forgery
    client = forged_app.test_client()
    start = client.get("/auth/sso")
    import requests

    location = requests.get(start.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    response = client.get(callback_path(location))
    assert response.status_code == 400, name
    assert client.get("/").status_code == 302
    with forged_app.app_context():
        assert db.session.scalar(select(User).where(User.email == "forged@example.com")) is None


def test_the_forging_provider_control_case_signs_in(forged_app, forging_provider):
    """Without a forgery the same provider's token is accepted: the refusals above are real."""
    from portal.demo import demo_sso_mapping

    with forged_app.app_context():
        demo_sso_mapping()
    client = forged_app.test_client()
    start = client.get("/auth/sso")
    import requests

    location = requests.get(start.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    assert client.get(callback_path(location)).status_code == 302
    assert client.get("/").status_code == 200


def test_login_page_explains_the_demo_people_only_in_development(app, app_settings):
    from portal import create_app

    html = app.test_client().get("/auth/login").get_data(as_text=True)
    assert "manager@example.com" not in html  # testing, not development
    dev = create_app({**app_settings, "PORTAL_ENV": "development"})
    html = dev.test_client().get("/auth/login").get_data(as_text=True)
    with dev.app_context():
        db.engine.dispose()
    dev.extensions["redis"].close()
    assert "manager@example.com" in html and "王经理" in html


def test_sign_out_is_on_record(app, client, demo_mapping, sso_sign_in):
    sso_sign_in("analyst@example.com")
    client.post("/auth/logout")
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_out"))
        assert event.actor_label == "analyst@example.com"
