from sqlalchemy import select

from portal.audience import api
from portal.audience.models import ApiToken, Contact, ContactEvent
from portal.extensions import db
from tests.audience.conftest import actor


def setup_token(app, make_user) -> str:
    with app.app_context():
        db.session.add(Contact(email="buyer@example.com", mobile="+8613800138000", score=60))
        db.session.commit()
        return api.create_token(actor(make_user("administrator")), "官网")


def post(client, token, body, **headers):
    return client.post("/api/v1/events", json=body, headers={"Authorization": f"Bearer {token}", **headers})


def test_event_is_recorded_for_the_contact_and_scores(app, client, make_user):
    token = setup_token(app, make_user)
    response = post(
        client,
        token,
        {
            "email": "BUYER@example.com",
            "kind": "webinar_attended",
            "occurred_at": "2026-11-20T10:00:00+08:00",
            "properties": {"webinar": "AI 营销"},
        },
    )
    assert response.status_code == 201
    with app.app_context():
        event = db.session.scalar(select(ContactEvent).where(ContactEvent.kind == "webinar_attended"))
        assert event.properties == {"webinar": "AI 营销"} and event.source == "api:官网"
        assert event.occurred_at.isoformat() == "2026-11-20T02:00:00+00:00"
        assert db.session.scalar(select(Contact.score)) == 70


def test_contact_can_be_found_by_mobile(client, app, make_user):
    token = setup_token(app, make_user)
    assert post(client, token, {"mobile": "138 0013 8000", "kind": "purchase"}).status_code == 201


def test_missing_forged_and_revoked_tokens_are_refused(app, client, make_user):
    token = setup_token(app, make_user)
    assert client.post("/api/v1/events", json={"kind": "purchase"}).status_code == 401
    assert post(client, "mp_forged", {"email": "buyer@example.com", "kind": "purchase"}).status_code == 401
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id))
        api.revoke_token(actor(make_user("administrator")), token_id)
    assert post(client, token, {"email": "buyer@example.com", "kind": "purchase"}).status_code == 401


def test_bad_payloads_get_a_json_error_naming_the_problem(app, client, make_user):
    token = setup_token(app, make_user)
    cases = [
        ({"email": "buyer@example.com", "kind": "hack"}, 422, "kind"),
        ({"email": "buyer@example.com", "kind": "purchase", "properties": []}, 422, "properties"),
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": "yesterday"}, 422, "occurred_at"),
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": "2026-11-20T10:00:00"}, 422, "occurred_at"),
        ({"email": "not-an-email", "kind": "purchase"}, 422, "email"),
        ({"kind": "purchase"}, 422, "email"),
    ]
    for body, status, field in cases:
        response = post(client, token, body)
        assert response.status_code == status, body
        assert response.get_json()["field"] == field
    assert post(client, token, {"email": "nobody@example.com", "kind": "purchase"}).status_code == 404
    response = client.post("/api/v1/events", data="not json", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400 and "JSON" in response.get_json()["error"]


def test_events_api_is_rate_limited_per_token(app, client, make_user):
    token = setup_token(app, make_user)
    statuses = [
        post(client, token, {"email": "nobody@example.com", "kind": "page_view"}).status_code for _ in range(601)
    ]
    assert statuses[:600] == [404] * 600
    assert statuses[600] == 429


def test_erased_person_cannot_be_tracked_again(app, client, make_user):
    from datetime import UTC, datetime

    from portal.audience import privacy

    token = setup_token(app, make_user)
    with app.app_context():
        contact_id = db.session.scalar(select(Contact.id))
        privacy.erase_person(actor(make_user("administrator")), contact_id, datetime.now(UTC))
    assert post(client, token, {"email": "buyer@example.com", "kind": "purchase"}).status_code == 409


def test_token_page_shows_a_new_token_once(client, login_as):
    login_as("administrator")
    html = client.post("/audience/integrations", data={"name": "直播平台"}).get_data(as_text=True)
    assert 'id="new-token">mp_' in html
    assert "mp_" not in client.get("/audience/integrations").get_data(as_text=True)


def test_out_of_range_times_wrong_types_and_deep_nesting_get_a_400_json_error(app, client, make_user):
    token = setup_token(app, make_user)
    deep: dict = {}
    node = deep
    for _ in range(50):
        node["x"] = {}
        node = node["x"]
    cases = [
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": "9999-12-31T23:59:59-05:00"}, "occurred_at"),
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": "0001-01-01T00:00:00+08:00"}, "occurred_at"),
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": "1970-01-01T00:00:00+00:00"}, "occurred_at"),
        ({"email": ["buyer@example.com"], "kind": "purchase"}, "email"),
        ({"mobile": {"n": 1}, "kind": "purchase"}, "mobile"),
        ({"email": "buyer@example.com", "kind": ["purchase"]}, "kind"),
        ({"email": "buyer@example.com", "kind": "purchase", "occurred_at": 1700000000}, "occurred_at"),
    ]
    for body, field in cases:
        response = post(client, token, body)
        assert response.status_code == 400, body
        assert response.get_json()["field"] == field
    nested = client.post(
        "/api/v1/events",
        data='{"kind": "purchase", "properties": ' + "[" * 100_000 + "]" * 100_000 + "}",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert nested.status_code == 400 and nested.get_json()["error"]
    response = post(client, token, {"email": "buyer@example.com", "kind": "purchase", "properties": deep})
    assert response.status_code == 400 and "nest" in response.get_json()["error"]


def test_a_body_over_the_limit_gets_a_413_json_error(app, client, make_user):
    token = setup_token(app, make_user)
    body = '{"kind": "purchase", "email": "buyer@example.com", "properties": {"x": "' + "a" * (1024 * 1024) + '"}}'
    response = client.post(
        "/api/v1/events", data=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "body" in response.get_json()["error"]


def test_failed_token_attempts_are_rate_limited_per_address(app, client, make_user):
    token = setup_token(app, make_user)
    statuses = [post(client, f"mp_guess{n}", {"kind": "purchase"}).status_code for n in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    limited = post(client, token, {"email": "buyer@example.com", "kind": "purchase"})
    assert limited.status_code == 429 and limited.get_json()["error"]  # JSON, never an HTML page
    elsewhere = client.post(
        "/api/v1/events",
        json={"email": "buyer@example.com", "kind": "purchase"},
        headers={"Authorization": f"Bearer {token}"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert elsewhere.status_code == 201
