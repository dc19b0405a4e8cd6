"""A sign-in counts as recent only when the provider says the person authenticated recently."""

import time
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import select

from portal.access import SIGNED_IN_AT_KEY
from portal.audit import AuditEvent
from portal.extensions import db
from tests.auth.conftest import callback_path, provider_login
from tests.conftest import set_provider_person


def forged_sign_in(forged_app, forging_provider, claims, start_path="/auth/sso"):
    from portal.demo import demo_sso_mapping

    with forged_app.app_context():
        demo_sso_mapping()
    forging_provider.forgery = {"claims": claims}
    client = forged_app.test_client()
    start = client.get(start_path)
    location = requests.get(start.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    return client, client.get(callback_path(location))


def signed_in_at(client) -> datetime:
    with client.session_transaction() as session:
        return datetime.fromisoformat(session[SIGNED_IN_AT_KEY])


def test_sign_in_time_is_when_the_provider_authenticated_the_person(forged_app, forging_provider):
    an_hour_ago = int(time.time()) - 3600
    client, response = forged_sign_in(forged_app, forging_provider, {"auth_time": an_hour_ago})
    assert response.status_code == 302
    assert signed_in_at(client) == datetime.fromtimestamp(an_hour_ago, UTC)


def test_reauthentication_answered_from_an_old_provider_session_is_refused(forged_app, forging_provider):
    client, response = forged_sign_in(
        forged_app, forging_provider, {"auth_time": int(time.time()) - 3600}, "/auth/sso?reauth=1&next=/"
    )
    assert response.status_code == 400
    assert b'id="sign-in-refused"' in response.data
    assert client.get("/").status_code == 302
    with forged_app.app_context():
        failure = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sign_in.failure"))
        assert failure.details["reason"] == "stale_reauthentication"


def test_reauthentication_without_auth_time_is_refused(forged_app, forging_provider):
    # The forging provider sends no auth_time unless told to; max_age makes it required.
    _client, response = forged_sign_in(forged_app, forging_provider, {}, "/auth/sso?reauth=1&next=/")
    assert response.status_code == 400


def test_reauthentication_through_the_provider_gives_a_recent_sign_in(app, client, demo_mapping):
    # Someone whose provider asks for a one-time code at sign-in (the step-up needs a second factor).
    claims = {"email": "wu@example.com", "name": "吴经理", "groups": ["marketing-managers"], "amr": ["pwd", "otp"]}
    set_provider_person(app.config["OIDC_ISSUER"], "wu", claims)
    start = client.get("/auth/sso?reauth=1&next=/notifications")
    response = client.get(callback_path(provider_login(start.headers["Location"], "wu")))
    assert response.status_code == 302
    assert response.headers["Location"] == "/notifications"
    assert datetime.now(UTC) - signed_in_at(client) < timedelta(minutes=1)
