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
