"""Helpers to walk the sign-in flow: the portal's test client on one side, the identity
provider's login form over real HTTP on the other."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.conftest import ROOT, free_port, wait_for_port


def provider_login(authorize_url: str, subject: str) -> str:
    """Submit the provider's own login form as `subject`; returns the callback URL it redirects to."""
    response = requests.post(authorize_url, data={"sub": subject}, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:500]
    return response.headers["Location"]


def callback_path(location: str) -> str:
    parts = urlsplit(location)
    return f"{parts.path}?{parts.query}"


@pytest.fixture
def sso_sign_in(client) -> Callable[..., Any]:
    """Walk the whole flow as `subject`; returns the portal's answer to the callback."""

    def sign_in(subject: str, next_path: str = "/"):
        start = client.get(f"/auth/sso?next={next_path}")
        assert start.status_code == 302
        return client.get(callback_path(provider_login(start.headers["Location"], subject)))

    return sign_in


@pytest.fixture
def demo_mapping(app):
    from portal.demo import demo_sso_mapping

    with app.app_context():
        demo_sso_mapping()


class ForgingProvider:
    """An identity provider we control, to hand the portal ID tokens the real one never would:
    expired, for another audience, from another issuer, with a wrong nonce or a bad signature;
    and, when `forgery["userinfo"]` is (status, body), a userinfo endpoint answering that."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = "marketing-portal"
        self.forgery: dict[str, Any] = {}
        self.nonces: dict[str, str] = {}

    def claims(self, code: str) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": "forged-user",
            "email": "forged@example.com",
            "name": "Forged",
            "groups": ["marketing-managers"],
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonces.get(code, ""),
        }
        claims.update(self.forgery.get("claims", {}))
        return claims

    def __call__(self, environ, start_response):
        request = Request(environ)
        if request.path == "/.well-known/openid-configuration":
            body = {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
            }
            if "userinfo" in self.forgery:
                body["userinfo_endpoint"] = f"{self.issuer}/userinfo"
            response = Response(json.dumps(body), content_type="application/json")
        elif request.path == "/jwks":
            response = Response(
                json.dumps({"keys": [self.key.as_dict(private=False)]}), content_type="application/json"
            )
        elif request.path == "/authorize":
            code = f"code-{len(self.nonces)}"
            self.nonces[code] = request.args.get("nonce", "")
            target = f"{request.args['redirect_uri']}?code={code}&state={request.args['state']}"
            response = Response(status=302, headers={"Location": target})
        elif request.path == "/token":
            code = request.form["code"]
            signing_key = self.other_key if self.forgery.get("bad_signature") else self.key
            id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, self.claims(code), signing_key)
            body = {"access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}
            response = Response(json.dumps(body), content_type="application/json")
        elif request.path == "/userinfo" and "userinfo" in self.forgery:
            status, body = self.forgery["userinfo"]
            response = Response(json.dumps(body), status=status, content_type="application/json")
        else:
            response = Response(status=404)
        return response(environ, start_response)


@pytest.fixture(scope="session")
def forging_provider() -> Iterator[ForgingProvider]:
    provider = ForgingProvider()
    server = make_server("127.0.0.1", provider.port, provider, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def forged_app(app, app_settings, forging_provider):
    """A portal whose identity provider is the forging one (same database as `app`)."""
    from portal import create_app
    from portal.extensions import db
    from tests.conftest import IsolatedClient

    forging_provider.forgery = {}
    other = create_app({**app_settings, "OIDC_ISSUER": forging_provider.issuer, "WTF_CSRF_ENABLED": False})
    other.test_client_class = IsolatedClient
    yield other
    with other.app_context():
        db.engine.dispose()
    other.extensions["redis"].close()


# The portal's registration at the spec-strict provider: the exact URIs it will accept, and the
# one way it lets the portal authenticate at the token endpoint.
STRICT_CLIENT = {
    "client_id": "marketing-portal-strict",
    "client_secret": "strict-provider-client-secret",
    "redirect_uris": ["http://127.0.0.1:5000/auth/callback"],
    "post_logout_redirect_uris": ["http://127.0.0.1:5000/auth/login"],
    "token_endpoint_auth_method": "client_secret_post",
}
# Beside the demo people: someone in no group at all, and someone only in a group nobody mapped.
STRICT_EXTRA_PEOPLE = [
    {"sub": "nogroups@example.com", "email": "nogroups@example.com", "name": "No Groups", "groups": []},
    {"sub": "intern@example.com", "email": "intern@example.com", "name": "Intern", "groups": ["/interns"]},
]


def start_strict_provider(workdir) -> tuple[str, subprocess.Popen]:
    """Run the spec-strict provider as a process of its own; returns its issuer and the process."""
    from portal.dev.identities import DEMO_IDENTITIES

    port = free_port()
    people = [{key: identity[key] for key in ("sub", "email", "name", "groups")} for identity in DEMO_IDENTITIES]
    config = {"port": port, "client": STRICT_CLIENT, "users": people + STRICT_EXTRA_PEOPLE}
    config_path = workdir / f"strict-provider-{port}.json"
    config_path.write_text(json.dumps(config))
    log = open(workdir / f"strict-provider-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.strict_oidc_provider", str(config_path)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log = log  # type: ignore[attr-defined]
    wait_for_port(port)
    return f"http://127.0.0.1:{port}", process


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.log.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def strict_provider(tmp_path_factory) -> Iterator[str]:
    issuer, process = start_strict_provider(tmp_path_factory.mktemp("strict-provider"))
    try:
        yield issuer
    finally:
        stop_process(process)


def strict_settings(issuer: str) -> dict[str, Any]:
    """The documented settings a company administrator would set for such a provider."""
    return {
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": STRICT_CLIENT["client_id"],
        "OIDC_CLIENT_SECRET": STRICT_CLIENT["client_secret"],
        "OIDC_SCOPES": "openid email profile groups",
        "OIDC_TOKEN_AUTH_METHOD": "client_secret_post",
    }


@pytest.fixture
def make_portal(app, app_settings):
    """Build portals sharing the test database with other settings; disposed after the test."""
    from portal import create_app
    from portal.extensions import db
    from tests.conftest import IsolatedClient

    built = []

    def make(**settings: Any):
        portal = create_app({**app_settings, "WTF_CSRF_ENABLED": False, **settings})
        portal.test_client_class = IsolatedClient
        built.append(portal)
        return portal

    yield make
    for portal in built:
        with portal.app_context():
            db.engine.dispose()
        portal.extensions["redis"].close()


@pytest.fixture
def strict_portal(make_portal, strict_provider):
    return make_portal(**strict_settings(strict_provider))


class Browser:
    """One person's browser: the portal's test client on one side, a cookie jar for the
    identity provider on the other (so that its own session is there too)."""

    def __init__(self, portal_client) -> None:
        self.portal = portal_client
        self.provider = requests.Session()

    def sign_in(self, subject: str, next_path: str = "/"):
        """Walk the whole flow as `subject`; returns the portal's answer to the callback."""
        start = self.portal.get(f"/auth/sso?next={next_path}")
        assert start.status_code == 302, start.status_code
        form = self.provider.get(start.headers["Location"], allow_redirects=False, timeout=10)
        assert form.status_code == 200, form.text[:500]  # the provider's login form
        return self.sign_in_at(start.headers["Location"], subject)

    def sign_in_at(self, authorize_url: str, subject: str, **how: str):
        """Submit the provider's login form as `subject` (and `acr`, `amr`, `auth_age`: how the
        person authenticated, which the ID token will say); returns the portal's answer to the callback."""
        answer = self.provider.post(authorize_url, data={"sub": subject, **how}, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text[:500]
        return self.portal.get(callback_path(answer.headers["Location"]))
