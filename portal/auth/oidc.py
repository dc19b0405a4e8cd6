"""The company identity provider, through Authlib's Flask client.

Authorization code flow with PKCE (S256); Authlib checks state and nonce and the ID token's
signature; we pin the issuer and audience and require exp and iat (Authlib's default
audience check alone is weak)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app

PROVIDER = "sso"
# Seconds of clock skew tolerated on exp/iat.
LEEWAY = 60
# A re-authentication (prompt=login, max_age=0) must come back with an auth_time this recent.
REAUTH_MAX_AGE = timedelta(minutes=5)


def register(app: Flask) -> None:
    """One OAuth registry per app: Authlib's registry holds the provider's URLs, and two apps
    in one process (tests, a second tenant) must not share them."""
    issuer = app.config["OIDC_ISSUER"].rstrip("/")
    oauth = OAuth(app)
    app.extensions["oidc"] = oauth
    oauth.register(
        PROVIDER,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )


def client():
    return current_app.extensions["oidc"].create_client(PROVIDER)


def claims_options() -> dict[str, Any]:
    config = current_app.config
    return {
        "iss": {
            "essential": True,
            "values": [config["OIDC_ISSUER"].rstrip("/"), config["OIDC_ISSUER"]],
        },
        "aud": {"essential": True, "value": config["OIDC_CLIENT_ID"]},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }


def end_session_endpoint() -> str | None:
    try:
        return client().load_server_metadata().get("end_session_endpoint")
    except Exception:
        return None


def authenticated_at(claims: dict[str, Any], now: datetime) -> datetime | None:
    """When the person authenticated at the provider (the ID token's `auth_time`), never later
    than `now`; None when the provider did not say."""
    raw = claims.get("auth_time")
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    return min(datetime.fromtimestamp(raw, UTC), now)


def freshly_authenticated(authenticated: datetime | None, now: datetime) -> bool:
    """Did the provider really authenticate the person just now? With max_age in the request,
    OpenID Connect makes `auth_time` required, so its absence counts as "no"."""
    return authenticated is not None and now - authenticated <= REAUTH_MAX_AGE
