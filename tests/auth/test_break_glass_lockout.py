"""The break-glass sign-in: limited per address and per account; an administrator lifts a lockout."""

from sqlalchemy import select

from portal.audit import AuditEvent
from portal.auth.models import User
from portal.auth.service import LOCAL_SIGN_IN_MAX_FAILURES
from portal.extensions import db
from tests.auth.test_local import run_create_admin

EMAIL = "breakglass@example.com"


def attempt(client, password: str, address: str = "127.0.0.1", **headers):
    return client.post(
        "/auth/local",
        data={"email": EMAIL, "password": password},
        environ_base={"REMOTE_ADDR": address},
        headers=headers,
    )


def actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_wrong_passwords_from_many_addresses_lock_the_account_until_an_administrator_lifts_it(app, client, login_as):
    password = run_create_admin(app)
    for n in range(LOCAL_SIGN_IN_MAX_FAILURES):
        assert attempt(client, "wrong-password", address=f"198.51.100.{n}").status_code == 422
    assert "local_sign_in.locked" in actions(app)
    # Locked: even the right password from a fresh address is refused, with the same answer.
    locked = attempt(app.test_client(), password, address="203.0.113.7")
    assert locked.status_code == 422
    assert "邮箱或密码错误" in locked.get_data(as_text=True)
    with app.app_context():
        account = db.session.scalar(select(User).where(User.email == EMAIL))
    admin_id = login_as("administrator")
    page = client.get(f"/admin/users/{account.id}").get_data(as_text=True)
    assert "密码错误次数过多，登录已被锁定" in page
    lifted = client.post(f"/admin/users/{account.id}/unlock")
    assert lifted.status_code == 303
    with app.app_context():
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "local_sign_in.unlocked"))
        assert event.actor_id == admin_id and event.target == f"user:{account.id}"
    assert attempt(app.test_client(), password, address="203.0.113.7").status_code == 303


def test_only_administrators_lift_lockouts(app, client, login_as):
    run_create_admin(app)
    with app.app_context():
        account = db.session.scalar(select(User).where(User.email == EMAIL))
    login_as("marketing_manager")
    assert client.post(f"/admin/users/{account.id}/unlock").status_code == 403


def test_behind_a_trusted_proxy_the_rate_limit_is_per_client_address(make_portal):
    portal = make_portal(TRUSTED_PROXY_HOPS=1)
    client = portal.test_client()

    def post(forwarded_for: str) -> int:
        return client.post(
            "/auth/local",
            data={"email": "nobody@example.com", "password": "wrong-password"},
            headers={"X-Forwarded-For": forwarded_for},
        ).status_code

    assert [post("198.51.100.1") for _ in range(10)] == [422] * 10
    assert post("198.51.100.1") == 429
    assert post("198.51.100.2") == 422  # another person behind the same proxy
    with portal.app_context():
        last = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
    assert last.details["address"] == "198.51.100.2"  # the audit trail sees the person, not the proxy


def test_without_trusted_proxies_a_forwarded_address_is_ignored(app, client):
    def post(forwarded_for: str) -> int:
        return client.post(
            "/auth/local",
            data={"email": "nobody@example.com", "password": "wrong-password"},
            headers={"X-Forwarded-For": forwarded_for},
        ).status_code

    assert [post(f"198.51.100.{n}") for n in range(10)] == [422] * 10
    assert post("198.51.100.99") == 429  # a forged header buys no new budget
