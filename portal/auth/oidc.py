"""The company identity provider, through Authlib's Flask client.

Authorization code flow with PKCE (S256); Authlib checks state and nonce and the ID token's
signature; we pin the issuer and audience and require exp and iat (Authlib's default
audience check alone is weak). Certified providers release most claims only at the userinfo
endpoint (and only for the scopes asked for), so after the code exchange the claims of the ID
token are completed from userinfo whenever the provider has that endpoint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import Flask, current_app, url_for

PROVIDER = "sso"
# Seconds of clock skew tolerated on exp/iat.
LEEWAY = 60
# A re-authentication (prompt=login, max_age=0) must come back with an auth_time this recent.
REAUTH_MAX_AGE = timedelta(minutes=5)
# Seconds the portal waits for the provider before telling the person it cannot be reached.
PROVIDER_TIMEOUT = 10
# Claims about the token itself, and about how the person authenticated (acr, amr): they come
# from the verified ID token, never from userinfo.
PROTOCOL_CLAIMS = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "nonce", "auth_time", "azp", "at_hash", "sub", "acr", "amr"}
)
TOKEN_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


class ProviderUnreachable(Exception):
    """The identity provider did not answer (network error, time-out, or a 5xx)."""


class SubjectMismatch(AuthlibBaseError):
    """Userinfo spoke of another person than the ID token (OpenID Connect Core 5.3.2)."""

    error = "userinfo_subject_mismatch"


def register(app: Flask) -> None:
    """One OAuth registry per app: Authlib's registry holds the provider's URLs, and two apps
    in one process (tests, a second tenant) must not share them."""
    issuer = app.config["OIDC_ISSUER"].rstrip("/")
    method = app.config["OIDC_TOKEN_AUTH_METHOD"]
    if method not in TOKEN_AUTH_METHODS:
        raise RuntimeError(f"OIDC_TOKEN_AUTH_METHOD must be one of {', '.join(TOKEN_AUTH_METHODS)}, not {method!r}")
    oauth = OAuth(app)
    app.extensions["oidc"] = oauth
    oauth.register(
        PROVIDER,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={
            "scope": " ".join(app.config["OIDC_SCOPES"].split()),
            "code_challenge_method": "S256",
            "token_endpoint_auth_method": method,
            "default_timeout": PROVIDER_TIMEOUT,
        },
    )


def client():
    return current_app.extensions["oidc"].create_client(PROVIDER)


def _public_url(endpoint: str) -> str:
    """An absolute URL on the portal's public address: what is registered at the provider must
    not depend on the host name a request happened to use."""
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + url_for(endpoint)


def callback_url() -> str:
    return _public_url("auth.callback")


def post_logout_url() -> str:
    return current_app.config["OIDC_POST_LOGOUT_REDIRECT"] or _public_url("auth.login")


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


def step_up_options() -> dict[str, Any]:
    """What the portal asks of the provider before a high-risk action: authenticate the person
    again whatever its own session says (prompt=login, max_age=0), at the level OIDC_MFA_ACR
    names when it is set (Keycloak's LoA, Entra's authentication context, Okta's policy)."""
    options: dict[str, Any] = {"prompt": "login", "max_age": 0}
    acr = " ".join(current_app.config["OIDC_MFA_ACR"].split())
    if acr:
        options["acr_values"] = acr
    return options


def start_sign_in(**options: Any):
    """The redirect to the provider's authorization endpoint."""
    try:
        return client().authorize_redirect(callback_url(), **options)
    except requests.RequestException as exc:
        raise ProviderUnreachable(str(exc)) from exc


def finish_sign_in() -> tuple[dict[str, Any], dict[str, Any]]:
    """Exchange the code, verify the ID token and complete its claims from userinfo.

    Returns (claims, token). Raises AuthlibBaseError (and joserfc's errors) for an answer that
    cannot be verified, ProviderUnreachable when the provider does not answer."""
    try:
        token = client().authorize_access_token(claims_options=claims_options(), leeway=LEEWAY)
        id_claims = token.get("userinfo")
        if not id_claims:
            raise AuthlibBaseError(error="no_id_token", description="the provider returned no ID token")
        return merged_claims(dict(id_claims), _userinfo(token)), token
    except requests.RequestException as exc:
        raise ProviderUnreachable(str(exc)) from exc


def _userinfo(token: dict[str, Any]) -> dict[str, Any] | None:
    if not client().load_server_metadata().get("userinfo_endpoint"):
        return None
    try:
        return dict(client().userinfo(token=token))
    except requests.HTTPError as exc:
        if exc.response is not None and exc.response.status_code < 500:
            # The provider answered, and refused the token it just issued: not an outage.
            raise AuthlibBaseError(error="userinfo_refused", description=str(exc)) from exc
        raise


def merged_claims(id_claims: dict[str, Any], userinfo: dict[str, Any] | None) -> dict[str, Any]:
    """The ID token's claims completed by userinfo's. The userinfo `sub` must be the ID token's;
    protocol claims (issuer, audience, times, nonce) are the verified ID token's only."""
    if userinfo is None:
        return id_claims
    if str(userinfo.get("sub", "")) != str(id_claims.get("sub", "")):
        raise SubjectMismatch(description="the userinfo endpoint answered for another subject")
    merged = dict(id_claims)
    merged.update({name: value for name, value in userinfo.items() if name not in PROTOCOL_CLAIMS})
    return merged


def logout_url(id_token: str | None) -> str | None:
    """The provider's end-session URL (RP-initiated logout) with the ID token as a hint and the
    registered post-logout target; None when the provider has no such endpoint."""
    if not id_token:
        return None
    try:
        if not client().load_server_metadata().get("end_session_endpoint"):
            return None
        return client().create_logout_url(
            post_logout_redirect_uri=post_logout_url(),
            id_token_hint=id_token,
            client_id=current_app.config["OIDC_CLIENT_ID"],
        )["url"]
    except requests.RequestException:
        return None  # the portal's own session has ended; the provider's may outlive it


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
