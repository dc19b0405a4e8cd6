"""Helpers to walk the sign-in flow: the portal's test client on one side, the identity
provider's login form over real HTTP on the other."""

from __future__ import annotations

import json
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

from tests.conftest import free_port


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
    expired, for another audience, from another issuer, with a wrong nonce or a bad signature."""

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
