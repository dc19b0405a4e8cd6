"""Every way a sign-in can go wrong answers with a page in the reader's language, never a 500."""

import pytest
import requests
from sqlalchemy import select

from portal.audit import AuditEvent
from portal.extensions import db
from tests.auth.conftest import callback_path
from tests.conftest import free_port

LANGUAGES = {"zh": "zh-CN,zh;q=0.9", "en": "en"}


def failure_reasons(app) -> list[str]:
    with app.app_context():
        return [e.details.get("reason") for e in db.session.scalars(select(AuditEvent))]


@pytest.mark.parametrize(
    ("language", "text"), [("zh", "身份提供方暂时无法访问"), ("en", "The identity provider cannot be reached")]
)
def test_provider_unreachable_at_the_start_is_a_503_with_retry(make_portal, language, text):
    nobody_listens = f"http://127.0.0.1:{free_port()}"
    portal = make_portal(OIDC_ISSUER=nobody_listens)
    answer = portal.test_client().get("/auth/sso?next=/campaigns", headers={"Accept-Language": LANGUAGES[language]})
    page = answer.get_data(as_text=True)
    assert answer.status_code == 503
    assert text in page
    assert 'href="/auth/sso?next=/campaigns"' in page
    assert "provider_unreachable" in failure_reasons(portal)


@pytest.mark.parametrize(("language", "text"), [("zh", "您已取消登录"), ("en", "You cancelled the sign-in")])
def test_access_denied_says_the_sign_in_was_cancelled(app, client, language, text):
    client.get("/auth/sso")
    answer = client.get(
        "/auth/callback?error=access_denied&state=whatever", headers={"Accept-Language": LANGUAGES[language]}
    )
    page = answer.get_data(as_text=True)
    assert answer.status_code == 403
    assert text in page and 'href="/auth/sso' in page
    assert "access_denied" in failure_reasons(app)


@pytest.mark.parametrize(
    ("language", "text"), [("zh", "错误代码为 temporarily_unavailable"), ("en", "error code temporarily_unavailable")]
)
def test_other_provider_errors_name_the_code(app, client, language, text):
    answer = client.get(
        "/auth/callback?error=temporarily_unavailable&error_description=maintenance",
        headers={"Accept-Language": LANGUAGES[language]},
    )
    assert answer.status_code == 400
    assert text in answer.get_data(as_text=True)


def test_a_crafted_error_code_is_not_repeated_on_the_page(client):
    answer = client.get("/auth/callback?error=请致电%20400-000-0000%20领取奖品")
    page = answer.get_data(as_text=True)
    message = page[page.index('id="provider-error"') : page.index("</section>")]
    assert answer.status_code == 400
    assert "领取奖品" not in message and "invalid_error_code" in message


def test_callback_without_a_sign_in_under_way_is_a_clear_400(client):
    answer = client.get("/auth/callback?code=abc&state=never-issued")
    assert answer.status_code == 400
    assert "无法验证" in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("userinfo", "reason"),
    [
        ((401, {"error": "invalid_token"}), "AuthlibBaseError"),
        ((200, {"sub": "someone-else", "email": "boss@example.com", "groups": ["portal-admins"]}), "SubjectMismatch"),
    ],
    ids=["refused-token", "another-subject"],
)
def test_userinfo_that_cannot_be_trusted_is_a_clear_400(forged_app, forging_provider, demo_mapping, userinfo, reason):
    forging_provider.forgery = {"userinfo": userinfo}
    client = forged_app.test_client()
    start = client.get("/auth/sso")
    location = requests.get(start.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    answer = client.get(callback_path(location))
    assert answer.status_code == 400
    assert "无法验证" in answer.get_data(as_text=True)
    assert reason in failure_reasons(forged_app)
    assert client.get("/").status_code == 302  # not signed in


def test_userinfo_claims_complete_the_id_token(forged_app, forging_provider, demo_mapping):
    # The ID token says marketing-managers; userinfo adds a display name and the same subject.
    forging_provider.forgery = {"userinfo": (200, {"sub": "forged-user", "name": "来自 userinfo 的名字"})}
    client = forged_app.test_client()
    start = client.get("/auth/sso")
    location = requests.get(start.headers["Location"], allow_redirects=False, timeout=10).headers["Location"]
    assert client.get(callback_path(location)).status_code == 302
    assert "来自 userinfo 的名字" in client.get("/").get_data(as_text=True)
