import json
from datetime import timedelta

from sqlalchemy import select, update

from portal.access import Permission
from portal.auth.models import WebSession
from portal.extensions import db
from portal.models_base import utcnow


def test_cookie_holds_only_an_opaque_id_and_is_httponly_and_lax(client, login_as):
    login_as("reviewer")
    response = client.get("/")
    cookie = client.get_cookie("session")
    assert len(cookie.value) >= 40 and "." not in cookie.value  # not a signed data blob
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert response.status_code == 200


def test_idle_session_expires(app, client, login_as):
    login_as("reviewer")
    with app.app_context():
        db.session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
    assert client.get("/").status_code == 302


def test_absolute_lifetime_ends_even_an_active_session(app, client, login_as):
    login_as("reviewer")
    with app.app_context():
        db.session.execute(update(WebSession).values(created_at=utcnow() - timedelta(hours=13)))
        db.session.commit()
    assert client.get("/").status_code == 302


def test_session_rows_are_stored_by_hash_not_by_the_cookie_value(app, client, login_as):
    login_as("reviewer")
    value = client.get_cookie("session").value
    with app.app_context():
        ids = list(db.session.scalars(select(WebSession.id_hash)))
    assert value not in ids and len(ids) == 1


def test_purge_job_drops_expired_sessions(app, client, login_as):
    from jobs.maintenance import purge_expired_sessions

    login_as("reviewer")
    with app.app_context():
        db.session.execute(update(WebSession).values(last_seen_at=utcnow() - timedelta(days=1)))
        db.session.commit()
        assert purge_expired_sessions() == 1
        assert db.session.scalar(select(WebSession)) is None


def test_session_cookie_is_secure_in_production(app_settings):
    from portal import create_app

    production = create_app(
        {**app_settings, "PORTAL_ENV": "production", "SECRET_KEY": "a-private-random-value-for-this-test"}
    )
    client = production.test_client()
    client.get("/auth/login")
    cookie = client.get_cookie("session")
    with production.app_context():
        db.engine.dispose()
    production.extensions["redis"].close()
    assert cookie is not None and cookie.secure and cookie.http_only and cookie.same_site == "Lax"


def test_next_paths_with_control_characters_are_not_followed(app):
    from portal.auth.views import safe_next

    with app.test_request_context():
        # Browsers drop the tab, which would leave "//evil.example": off-site.
        assert safe_next("/\t/evil.example") == "/"
        assert safe_next("//evil.example") == "/"
        assert safe_next("/content?page=2") == "/content?page=2"


def test_the_signed_in_read_gives_the_values_sqlalchemy_gives(app, client, login_as):
    """The session read runs on the driver's cursor; its values (the session data and the
    roles' permission lists as JSON text, times in UTC, the unread count) are converted as
    SQLAlchemy's own execution of the same statement converts them, on either database."""
    from portal import notify
    from portal.auth import sessions

    login_as("marketing_manager")
    with app.app_context():
        user_id = db.session.scalar(select(WebSession.user_id))
        notify.notify([user_id], "月报已生成", "/reports/")
        db.session.commit()
        id_hash = db.session.scalar(select(WebSession.id_hash))
        expected = [
            dict(row) for row in db.session.execute(sessions._signed_in_query(), {"id_hash": id_hash}).mappings()
        ]
        found = sessions._read_rows(id_hash)
    assert found == expected
    assert found[0]["unread"] == 1 and found[0]["created_at"].utcoffset() == timedelta(0)
    assert json.loads(found[0]["data"])["_user_id"] == str(user_id)
    assert all(isinstance(json.loads(r["role_permissions"]), list) for r in found)


def test_the_signed_in_user_joins_the_orm_session_only_when_one_is_made(app, client, login_as, monkeypatch):
    """The user read with the session row comes whole (every column, its permissions) and in no
    ORM session: a kept page makes none, and the first ORM session of a request takes the user
    in, so that the ORM and the request speak of one object and changes to it are stored."""
    from flask_login import current_user

    from portal.auth.models import User
    from portal.extensions import RequestSession

    user_id = login_as("marketing_manager")
    client.get("/reports/")  # the dashboard is rendered once and kept
    made = []
    original_init = RequestSession.__init__

    def counting_init(self, *args, **kwargs):
        made.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(RequestSession, "__init__", counting_init)
    kept = client.get("/reports/")
    assert kept.status_code == 200 and 'id="kpi-delivered"' in kept.text
    assert made == []

    cookie = client.get_cookie("session").value
    with app.test_request_context("/", headers={"Cookie": f"session={cookie}"}):
        app.preprocess_request()
        reader = current_user._get_current_object()
        assert reader.id == user_id and reader.email and reader.last_sign_in_at is None
        assert reader.can(Permission.REPORTS_VIEW) and not db.session.registry.has()
        assert db.session.get(User, user_id) is reader
        assert db.session.scalars(select(User).where(User.id == user_id)).one() is reader
        assert [role.name for role in reader.roles] == ["marketing_manager"]
        reader.locale = "en"
        db.session.commit()
    with app.app_context():
        assert db.session.get(User, user_id).locale == "en"
