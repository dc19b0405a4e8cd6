from portal.access import undeclared_endpoints


def test_every_endpoint_declares_its_access(app):
    assert undeclared_endpoints(app) == []


def test_anonymous_page_request_is_sent_to_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login")


def test_anonymous_htmx_request_gets_hx_redirect_not_a_login_page(client):
    response = client.get("/notifications", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/auth/login")
    assert b"<html" not in response.data


def test_user_without_permission_gets_403_page_and_fragment(client, login_as):
    login_as("reviewer")
    page = client.get("/system")
    assert page.status_code == 403
    assert b"<html" in page.data
    fragment = client.get("/system", headers={"HX-Request": "true"})
    assert fragment.status_code == 403
    assert b"<html" not in fragment.data
    assert b'id="error-403"' in fragment.data


def test_dashboard_shows_only_the_navigation_the_role_may_use(client, login_as):
    login_as("reviewer")
    html = client.get("/").get_data(as_text=True)
    assert 'href="/system"' not in html
    assert "/outbox" not in html


def test_dashboard_figures_follow_the_roles(app, client, login_as, make_user):
    from portal.audience.models import Contact
    from portal.extensions import db

    with app.app_context():
        db.session.add_all([Contact(email="a@example.com"), Contact(email="b@example.com")])
        db.session.commit()
    login_as("marketing_manager")
    html = client.get("/").get_data(as_text=True)
    assert 'id="kpi-contacts">2<' in html and 'id="kpi-in-review">0<' in html
    analyst = app.test_client()
    with analyst.session_transaction() as session:
        session["_user_id"] = str(make_user("data_analyst"))
    html = analyst.get("/").get_data(as_text=True)
    assert "kpi-contacts" not in html and 'id="kpi-approved">0<' in html


def test_every_menu_entry_a_role_sees_opens_for_it_and_analysts_find_campaigns(app, make_user):
    import re

    from portal.access import BUILTIN_ROLES

    for role in BUILTIN_ROLES:
        client = app.test_client()
        with client.session_transaction() as session:
            session["_user_id"] = str(make_user(role))
        html = client.get("/").get_data(as_text=True)
        menu = re.search(r'<nav class="mainnav".*?</nav>', html, re.S).group(0)
        links = re.findall(r'href="(/[^"]*)"', menu)
        assert links, role
        for link in links:
            assert client.get(link).status_code == 200, (role, link)
        if role == "data_analyst":
            assert "/campaigns/" in links  # campaigns are read-only for them, but theirs to read
