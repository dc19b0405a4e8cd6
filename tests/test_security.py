"""The browser-side defences: headers on every response, a strict policy the templates keep,
redirect targets that stay on the site, and production's refusal of a weak SECRET_KEY."""

import re
import secrets
from pathlib import Path

import pytest

from portal.config import DEV_SECRET_KEY, load_config
from portal.htmx import same_site_path

TEMPLATES = Path(__file__).resolve().parent.parent / "portal" / "templates"


def test_every_response_carries_the_security_headers(client):
    for path in ("/auth/login", "/healthz", "/static/app.css", "/no-such-page"):
        headers = client.get(path).headers
        policy = headers["Content-Security-Policy"]
        for directive in (
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "frame-ancestors 'none'",
        ):
            assert directive in policy, (path, directive)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in headers  # only in production, behind HTTPS


def test_signed_in_pages_are_never_cached(client, login_as):
    assert "no-store" not in client.get("/auth/login").headers.get("Cache-Control", "")
    login_as("data_analyst")
    assert client.get("/").headers["Cache-Control"] == "no-store"


def test_production_sends_hsts(app_settings):
    from portal import create_app
    from portal.extensions import db

    production = create_app({**app_settings, "PORTAL_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48)})
    headers = production.test_client().get("/auth/login").headers
    with production.app_context():
        db.engine.dispose()
    production.extensions["redis"].close()
    assert headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_templates_have_no_inline_script_handler_style_or_javascript_url():
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
    handler = re.compile(r"\son[a-z]+\s*=", re.I)
    offenders = []
    for template in TEMPLATES.rglob("*.html"):
        text = re.sub(r"\{#.*?#\}", "", template.read_text(encoding="utf-8"), flags=re.S)  # comments render nothing
        for name, pattern in (
            ("inline <script>", inline_script),
            ("on* handler", handler),
            ("<style>", re.compile(r"<style", re.I)),
            ("style attribute", re.compile(r"\sstyle\s*=", re.I)),
            ("javascript: URL", re.compile(r"javascript:", re.I)),
        ):
            if pattern.search(text):
                offenders.append(f"{template.relative_to(TEMPLATES)}: {name}")
    assert offenders == []


@pytest.mark.parametrize(
    "target",
    [
        "https://elsewhere.example/",
        "//elsewhere.example/",
        "/\\elsewhere.example",
        "/\t/elsewhere.example",
        "http:/elsewhere.example",
        "javascript:alert(1)",
        "campaigns",
        "",
        None,
    ],
)
def test_redirect_targets_off_the_site_fall_back(target):
    assert same_site_path(target, "/fallback") == "/fallback"


def test_same_site_paths_are_kept():
    assert same_site_path("/campaigns/3?tab=steps#log", "/") == "/campaigns/3?tab=steps#log"


def test_test_address_form_does_not_redirect_off_site(client, login_as):
    login_as("operations_specialist")
    answer = client.post(
        "/campaigns/test-addresses", data={"address": "wang@example.com", "back": "https://elsewhere/"}
    )
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/campaigns/"
    kept = client.post("/campaigns/test-addresses", data={"address": "li@example.com", "back": "/campaigns/?x=1"})
    assert kept.headers["Location"] == "/campaigns/?x=1"


def test_language_switch_does_not_redirect_off_site(client):
    answer = client.post("/locale", data={"locale": "en", "next": "//elsewhere.example/"})
    assert answer.headers["Location"] == "/"


@pytest.mark.parametrize("secret", ["", "   ", "short-but-private", DEV_SECRET_KEY, "change-me"])
def test_production_refuses_a_weak_secret_key(tmp_path, monkeypatch, secret):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        load_config(str(tmp_path), {"PORTAL_ENV": "production", "SECRET_KEY": secret})


def test_production_accepts_a_generated_secret_key(tmp_path):
    secret = secrets.token_urlsafe(48)  # what the README tells operators to run
    assert load_config(str(tmp_path), {"PORTAL_ENV": "production", "SECRET_KEY": secret})["SECRET_KEY"] == secret


def test_the_preview_frame_is_only_for_the_person_it_was_rendered_for(app, client, login_as):
    from flask_login import login_user

    from portal.auth.models import User
    from portal.extensions import db
    from portal.security import preview_frame_url

    owner_id = login_as("marketing_manager")
    with app.test_request_context():
        login_user(db.session.get(User, owner_id))
        url = preview_frame_url('<p style="color:red">你好</p>')
    frame = client.get(url)
    assert frame.status_code == 200 and "你好" in frame.get_data(as_text=True)
    assert "style-src 'unsafe-inline'" in frame.headers["Content-Security-Policy"]
    other = app.test_client()
    assert other.get(url).status_code == 302  # anonymous: to sign-in
    login_as("marketing_manager")  # the test client is now someone else
    assert client.get(url).status_code == 404
