from portal.auth.models import User
from portal.extensions import db


def test_chinese_is_the_default(client):
    html = client.get("/auth/login").get_data(as_text=True)
    assert 'lang="zh-CN"' in html
    assert "登录" in html


def test_accept_language_english_gives_english(client):
    html = client.get("/auth/login", headers={"Accept-Language": "en-US,en;q=0.9"}).get_data(as_text=True)
    assert 'lang="en"' in html
    assert "Sign in" in html


def test_switcher_sets_the_language_for_the_session(client):
    response = client.post("/locale", data={"locale": "en", "next": "/auth/login"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/login"
    html = client.get("/auth/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "Sign in" in html


def test_switcher_saves_the_choice_on_the_user(app, client, login_as):
    user_id = login_as("reviewer")
    client.post("/locale", data={"locale": "en", "next": "/"})
    with app.app_context():
        assert db.session.get(User, user_id).locale == "en"


def test_users_saved_language_wins_over_accept_language(client, login_as):
    login_as("reviewer", locale="en")
    html = client.get("/", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "Dashboard" in html and "仪表盘" not in html


def test_switcher_refuses_offsite_next(client):
    response = client.post("/locale", data={"locale": "en", "next": "//evil.example/"})
    assert response.headers["Location"] == "/"


def test_unknown_locale_is_a_400(client):
    assert client.post("/locale", data={"locale": "fr"}).status_code == 400
