"""The dashboard is rendered once for everyone asking the same (reports.views): what is kept
never outlives the session, the permissions or the figures' age limit it was shown under, and
each person's own header (name, menu, unread count, CSRF token) stays theirs."""

import re

from sqlalchemy import select, update

from portal.auth.models import Role
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from tests.reports.conftest import FIGURES, T0


def delivered(html: str) -> str:
    return re.search(r'id="kpi-delivered">([^<]*)<', html).group(1)


def regrant(app, user_id: int, role: str) -> None:
    from portal.admin.service import replace_grants

    with app.app_context():
        replace_grants(user_id, {db.session.scalar(select(Role.id).where(Role.name == role))}, "manual")
        db.session.commit()


def test_a_kept_dashboard_is_not_shown_once_the_session_has_ended(app, client, login_as, report_data):
    from portal.auth.sessions import end_sessions_of

    user_id = login_as("marketing_manager")
    assert client.get("/reports/").status_code == 200
    with app.app_context():
        end_sessions_of(user_id)
        db.session.commit()
    page = client.get("/reports/")
    fragment = client.get("/reports/?grouping=tag", headers={"HX-Request": "true"})
    assert page.status_code == 302 and "/auth/login" in page.headers["Location"]
    assert fragment.status_code == 401 and "/auth/login" in fragment.headers["HX-Redirect"]


def test_a_kept_dashboard_follows_the_readers_permissions(app, client, login_as, report_data):
    user_id = login_as("marketing_manager")
    html = client.get("/reports/").get_data(as_text=True)
    assert 'value="campaign_pdf"' in html and 'href="/admin/users"' in html
    regrant(app, user_id, "operations_specialist")  # may view reports, not build them
    html = client.get("/reports/").get_data(as_text=True)
    assert 'value="campaign_pdf"' not in html and 'href="/admin/users"' not in html
    assert delivered(html) == delivered(client.get("/reports/").get_data(as_text=True))
    regrant(app, user_id, "reviewer")  # no reports at all
    assert client.get("/reports/").status_code == 403
    assert client.get("/reports/", headers={"HX-Request": "true"}).status_code == 403


def test_the_unread_count_in_a_kept_header_follows_new_notifications(app, client, login_as, report_data):
    from portal import notify

    user_id = login_as("marketing_manager")
    assert 'class="badge"' not in client.get("/reports/").get_data(as_text=True)
    with app.app_context():
        notify.notify([user_id], "报告已生成", "/reports/history")
        db.session.commit()
    assert '<span class="badge">1</span>' in client.get("/reports/").get_data(as_text=True)
    client.post("/notifications/read")
    assert 'class="badge"' not in client.get("/reports/").get_data(as_text=True)


def test_each_reader_of_a_kept_dashboard_gets_their_own_name_and_token(app, client, login_as, report_data):
    login_as("marketing_manager", name="王经理")
    first = client.get("/reports/").get_data(as_text=True)
    other = app.test_client()
    with other.session_transaction() as session:
        session["_user_id"] = str(_another_manager(app))
        session["_fresh"] = True
    second = other.get("/reports/").get_data(as_text=True)
    assert "王经理" in first and "王经理" not in second and "李经理" in second
    first_tokens, second_tokens = _tokens(first), _tokens(second)
    assert len(first_tokens) == 1 and len(second_tokens) == 1 and first_tokens != second_tokens
    assert delivered(first) == delivered(second)


def _another_manager(app) -> int:
    from portal.admin.service import replace_grants
    from portal.auth.models import User

    with app.app_context():
        user = User(email="li@example.com", name="李经理", sso_subject="sub-li")
        db.session.add(user)
        db.session.flush()
        replace_grants(user.id, {db.session.scalar(select(Role.id).where(Role.name == "marketing_manager"))}, "manual")
        db.session.commit()
        return user.id


def _tokens(html: str) -> set[str]:
    """Every CSRF token on the page: the forms' and the one htmx sends."""
    found = set(re.findall(r'name="csrf_token" value="([^"]+)"', html))
    found |= set(re.findall(r"X-CSRFToken&#34;: &#34;([^&]+)&#34;", html))
    found |= set(re.findall(r'X-CSRFToken": "([^"]+)"', html))
    return found


def test_a_kept_dashboard_is_never_older_than_the_age_limit(app, client, login_as, report_data):
    login_as("data_analyst")
    url = f"/reports/?campaign_ids={report_data['campaign']}"
    html = client.get(url).get_data(as_text=True)
    assert delivered(html) == str(FIGURES["delivered"]) and "数据截至" in html
    with app.app_context():
        db.session.execute(
            update(Delivery)
            .where(Delivery.campaign_id == report_data["campaign"], Delivery.status == DeliveryStatus.FAILED)
            .values(status=DeliveryStatus.SENT, sent_at=T0)
        )
        db.session.commit()
    # Within the age limit the page may show the figures as they were (and says as of when) ...
    assert delivered(client.get(url).get_data(as_text=True)) == str(FIGURES["delivered"])
    app.config["REPORT_ROLLUP_MAX_AGE_SECONDS"] = 0
    try:
        # ... and never beyond it.
        assert delivered(client.get(url).get_data(as_text=True)) == str(FIGURES["delivered"] + 2)
    finally:
        app.config["REPORT_ROLLUP_MAX_AGE_SECONDS"] = 60
