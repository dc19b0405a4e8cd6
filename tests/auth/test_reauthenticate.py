from datetime import UTC, datetime, timedelta

from portal.access import Permission, check_step_up, require, session_step_up_at


def high_risk_app(app_settings):
    from portal import create_app

    other = create_app({**app_settings, "WTF_CSRF_ENABLED": False})

    @require(Permission.AUDIENCE_BULK_EXPORT)
    def export_everything():
        check_step_up(session_step_up_at())
        return "exported"

    other.add_url_rule("/__export", "export_everything", export_everything)
    return other


def test_high_risk_action_with_an_old_second_factor_sends_the_person_to_a_step_up(app, app_settings, make_user):
    from portal.extensions import db

    other = high_risk_app(app_settings)
    client = other.test_client()
    user_id = make_user("marketing_manager")
    for minutes_ago, expected in ((2, 200), (20, 302)):
        with client.session_transaction() as session:
            session["_user_id"] = str(user_id)
            session["signed_in_at"] = datetime.now(UTC).isoformat()
            session["second_factor_at"] = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()
        response = client.get("/__export")
        assert response.status_code == expected
    assert response.headers["Location"].startswith("/auth/sso?reauth=1")
    assert "next=/__export" in response.headers["Location"]
    with other.app_context():
        db.engine.dispose()
    other.extensions["redis"].close()


def test_reauthentication_asks_the_provider_to_prompt_again(client):
    location = client.get("/auth/sso?reauth=1&next=/").headers["Location"]
    assert "prompt=login" in location
    assert "max_age=0" in location


def test_reauthenticate_helper_answers_htmx_with_a_redirect_header(app):
    from portal.auth.views import reauthenticate

    with app.test_request_context("/campaigns/7/delete", method="POST", headers={"HX-Request": "true"}):
        response = reauthenticate("/campaigns/7")
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == "/auth/sso?reauth=1&next=/campaigns/7"
