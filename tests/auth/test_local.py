from click.testing import CliRunner
from sqlalchemy import select

from portal.audit import AuditEvent
from portal.auth.models import User
from portal.extensions import db


def run_create_admin(app, email="breakglass@example.com") -> str:
    from flask.cli import ScriptInfo

    runner = CliRunner()
    result = runner.invoke(app.cli, ["create-admin", email], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1].rsplit(" ", 1)[-1]


def test_create_admin_prints_a_one_time_password_stored_hashed(app):
    password = run_create_admin(app)
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == "breakglass@example.com"))
        assert user.is_local and user.must_change_password
        assert user.password_hash.startswith("scrypt:")
        assert password not in user.password_hash
        assert [role.name for role in user.roles] == ["administrator"]


def test_first_local_sign_in_forces_a_password_change(app, client):
    password = run_create_admin(app)
    response = client.post("/auth/local", data={"email": "breakglass@example.com", "password": password})
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/password"
    assert client.get("/").headers["Location"] == "/auth/password"  # nothing else until changed
    short = client.post("/auth/password", data={"current": password, "new": "short", "confirm": "short"})
    assert short.status_code == 422
    same = client.post("/auth/password", data={"current": password, "new": password, "confirm": password})
    assert same.status_code == 422
    assert "新密码不能与当前密码相同。" in same.get_data(as_text=True)
    new = "a-much-longer-passphrase"
    done = client.post("/auth/password", data={"current": password, "new": new, "confirm": new})
    assert done.status_code == 303
    # Then the second factor is enrolled (tests/auth/test_totp.py), before anything else.
    assert client.get("/").headers["Location"] == "/auth/two-factor"
    with app.app_context():
        actions = set(db.session.scalars(select(AuditEvent.action)))
        assert {"sign_in.success", "local_password.changed"} <= actions


def test_wrong_password_is_refused_and_audited(app, client):
    run_create_admin(app)
    response = client.post("/auth/local", data={"email": "breakglass@example.com", "password": "wrong-password"})
    assert response.status_code == 422
    assert client.get("/").status_code == 302
    with app.app_context():
        failure = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_in.failure"))
        assert failure.details["reason"] == "bad_credentials"


def test_local_sign_in_is_rate_limited(app, client):
    run_create_admin(app)
    codes = [
        client.post("/auth/local", data={"email": "breakglass@example.com", "password": "x" * 12}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [422] * 10
    assert codes[10] == 429


def test_local_sign_in_can_be_switched_off(app_settings):
    from portal import create_app

    closed = create_app({**app_settings, "LOCAL_LOGIN": False})
    client = closed.test_client()
    assert client.get("/auth/local").status_code == 404
    assert b"/auth/local" not in client.get("/auth/login").data
    with closed.app_context():
        db.engine.dispose()
    closed.extensions["redis"].close()


def test_sso_people_cannot_use_the_local_form(app, client, make_user):
    make_user("administrator", email="sso-admin@example.com")
    response = client.post("/auth/local", data={"email": "sso-admin@example.com", "password": "anything-long"})
    assert response.status_code == 422


def test_forced_password_change_answers_htmx_with_a_redirect_header_not_a_page(app, client):
    password = run_create_admin(app)
    client.post("/auth/local", data={"email": "breakglass@example.com", "password": password})
    response = client.get("/notifications", headers={"HX-Request": "true"})
    assert response.status_code == 403
    assert response.headers["HX-Redirect"] == "/auth/password"
    assert b"<html" not in response.data
