def test_404_is_a_page_and_an_htmx_fragment(client):
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert b"<html" in page.data and b'id="error-404"' in page.data
    fragment = client.get("/no-such-page", headers={"HX-Request": "true"})
    assert fragment.status_code == 404
    assert b"<html" not in fragment.data and b'id="error-404"' in fragment.data


def test_500_is_a_friendly_page(app, app_settings):
    from portal import create_app
    from portal.access import public

    @public
    def explode():
        raise RuntimeError("boom")

    other = create_app({**app_settings, "PROPAGATE_EXCEPTIONS": False})
    other.add_url_rule("/__explode", "explode", explode)
    client = other.test_client()
    page = client.get("/__explode")
    fragment = client.get("/__explode", headers={"HX-Request": "true"})
    with other.app_context():
        from portal.extensions import db

        db.engine.dispose()
    assert page.status_code == 500
    assert b'id="error-500"' in page.data and b"boom" not in page.data
    assert fragment.status_code == 500 and b"<html" not in fragment.data


def test_responses_vary_on_hx_request(client):
    assert "HX-Request" in client.get("/auth/login").headers["Vary"]


def test_htmx_is_vendored_and_csrf_travels_in_hx_headers(client, login_as):
    login_as("administrator")
    html = client.get("/").get_data(as_text=True)
    assert "/static/vendor/htmx-2.0.11.min.js" in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "http://" not in html.split("<main")[0].replace("http://www.w3.org", "")
    with client.get("/static/vendor/htmx-2.0.11.min.js") as script:
        assert script.status_code == 200


def test_post_without_csrf_token_is_refused(app, client, login_as):
    login_as("administrator")
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        response = client.post("/notifications/read")
    finally:
        app.config["WTF_CSRF_ENABLED"] = False
    assert response.status_code == 400
