"""A spec-strict OpenID Connect provider, run by the tests as a process of its own.

It behaves the way certified providers (Okta, Keycloak, Entra ID...) do by default, not the way
a friendly test double would: the ID token carries only the protocol claims and `sub`; every
other claim is released at the userinfo endpoint and only for the scope that covers it (`groups`
only with the `groups` scope); PKCE with S256 is required; the redirect URI and the post-logout
URI must be registered exactly; the client must authenticate at the token endpoint with the one
method it is registered for; ID tokens are signed with RS256 and published in a JWKS. Built on
Authlib's server components.

    python -m tests.support.strict_oidc_provider CONFIG.json

CONFIG: {"port", "client": {"client_id", "client_secret", "redirect_uris",
"post_logout_redirect_uris", "token_endpoint_auth_method"}, "users": [{"sub", "email", "name",
"groups"}]}. The login form takes a subject, like the development provider's, and optionally how
the person authenticated, which the ID token then carries: `acr`, `amr` (values separated by
spaces or commas, RFC 8176) and `auth_age` (seconds before now for `auth_time`), so that a test
chooses what a step-up answer says."""

from __future__ import annotations

import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, InvalidRequestError, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo, UserInfoEndpoint
from authlib.oidc.core.models import AuthorizationCodeMixin
from authlib.oidc.rpinitiated import EndSessionEndpoint
from flask import Flask, jsonify, request, session
from joserfc.jwk import RSAKey
from markupsafe import escape
from werkzeug.serving import make_server

CODE_LIFETIME = 60
SIGNING_ALG = "RS256"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    token_endpoint_auth_method: str

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {"post_logout_redirect_uris": self.post_logout_redirect_uris}

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None  # redirect_uri is required on every request

    def get_allowed_scope(self, scope):
        allowed = {"openid", "email", "profile", "groups"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return endpoint != "token" or method == self.token_endpoint_auth_method

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    subject: str
    nonce: str | None
    auth_time: int
    code_challenge: str | None
    code_challenge_method: str | None
    acr: str | None = None
    amr: list[str] | None = None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def get_nonce(self):
        return self.nonce

    def get_auth_time(self):
        return self.auth_time

    def get_acr(self):
        return self.acr

    def get_amr(self):
        return self.amr

    def is_expired(self):
        return time.time() - self.issued_at > CODE_LIFETIME


@dataclass
class Token(TokenMixin):
    access_token: str
    client: Client
    subject: str
    scope: str
    expires_at: float

    def check_client(self, client):
        return client.client_id == self.client.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return int(self.expires_at - time.time())

    def is_expired(self):
        return time.time() >= self.expires_at

    def is_revoked(self):
        return False

    def get_user(self):
        return self.subject

    def get_client(self):
        return self.client


def user_info(users: dict[str, dict], subject: str, scope: str) -> UserInfo:
    """The claims this person's token may see: per scope, `groups` only for the `groups` scope."""
    person = users[subject]
    claims = UserInfo(sub=subject, name=person["name"], email=person["email"], email_verified=True)
    released = UserInfo(claims.filter(scope))
    released["sub"] = subject
    if "groups" in scope.split():
        released["groups"] = list(person["groups"])
    return released


def build_app(config: dict[str, Any]) -> Flask:
    issuer = f"http://127.0.0.1:{config['port']}"
    client = Client(**config["client"])
    users = {str(person["sub"]): person for person in config["users"]}
    key = RSAKey.generate_key(2048, parameters={"kid": "strict-1", "use": "sig", "alg": SIGNING_ALG})
    codes: dict[str, AuthorizationCode] = {}
    tokens: dict[str, Token] = {}

    app = Flask(__name__)
    app.secret_key = secrets.token_hex(32)
    app.config["SESSION_COOKIE_NAME"] = "op_session"

    def query_client(client_id):
        return client if client_id == client.client_id else None

    def save_token(token, oauth_request):
        tokens[token["access_token"]] = Token(
            token["access_token"],
            oauth_request.client,
            oauth_request.user,
            token["scope"],
            time.time() + token["expires_in"],
        )

    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code, oauth_request):
            payload = oauth_request.payload
            codes[code] = AuthorizationCode(
                code=code,
                client_id=oauth_request.client.client_id,
                redirect_uri=payload.redirect_uri,
                scope=payload.scope,
                subject=oauth_request.user,
                nonce=payload.data.get("nonce"),
                auth_time=session["auth_time"],
                code_challenge=payload.data.get("code_challenge"),
                code_challenge_method=payload.data.get("code_challenge_method"),
                acr=session.get("acr") or None,
                amr=session.get("amr") or None,
            )

        def query_authorization_code(self, code, oauth_client):
            found = codes.get(code)
            if found and found.client_id == oauth_client.client_id and not found.is_expired():
                return found
            return None

        def delete_authorization_code(self, authorization_code):
            codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.subject

    class StrictOpenIDCode(OpenIDCode):
        def exists_nonce(self, nonce, oauth_request):
            return any(code.nonce == nonce for code in codes.values())

        def resolve_client_private_key(self, oauth_client):
            return key

        def get_client_algorithm(self, oauth_client):
            return SIGNING_ALG

        def get_encode_header(self, oauth_client):
            return {"alg": SIGNING_ALG, "kid": key.kid}

        def get_client_claims(self, oauth_client):
            return {"iss": issuer, "aud": oauth_client.client_id, "exp": int(time.time()) + 300}

        def generate_user_info(self, user, scope):
            return UserInfo(sub=user)  # everything else only at userinfo

    class S256Only(CodeChallenge):
        """PKCE for every client, confidential ones too, and only with S256."""

        SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

        def validate_code_challenge(self, grant, redirect_uri):
            data = grant.request.payload.data
            if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
                raise InvalidRequestError("PKCE with code_challenge_method=S256 is required")
            super().validate_code_challenge(grant, redirect_uri)

    server.register_grant(CodeGrant, [StrictOpenIDCode(require_nonce=True), S256Only(required=True)])

    class Bearer(BearerTokenValidator):
        def authenticate_token(self, token_string):
            return tokens.get(token_string)

    protector = ResourceProtector()
    protector.register_token_validator(Bearer())

    class UserInfoByScope(UserInfoEndpoint):
        def generate_user_info(self, user, scope):
            return user_info(users, user, scope)

        def get_issuer(self):
            return issuer

    server.register_endpoint(UserInfoByScope(resource_protector=protector))

    class EndSession(EndSessionEndpoint):
        def get_server_jwks(self):
            return {"keys": [key.as_dict(private=False)]}

        def end_session(self, end_session_request):
            session.clear()

    server.register_endpoint(EndSession)

    @app.get("/.well-known/openid-configuration")
    def discovery():
        return jsonify(
            issuer=issuer,
            authorization_endpoint=f"{issuer}/authorize",
            token_endpoint=f"{issuer}/token",
            userinfo_endpoint=f"{issuer}/userinfo",
            jwks_uri=f"{issuer}/jwks",
            end_session_endpoint=f"{issuer}/logout",
            response_types_supported=["code"],
            grant_types_supported=["authorization_code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=[SIGNING_ALG],
            scopes_supported=["openid", "email", "profile", "groups"],
            token_endpoint_auth_methods_supported=[client.token_endpoint_auth_method],
            code_challenge_methods_supported=["S256"],
            claims_supported=["sub", "name", "email", "email_verified", "groups"],
        )

    @app.get("/jwks")
    def jwks():
        return jsonify(keys=[key.as_dict(private=False)])

    @app.route("/authorize", methods=["GET", "POST"])
    def authorize():
        prompt = request.values.get("prompt", "")
        try:
            grant = server.get_consent_grant(end_user=session.get("sub"))
        except OAuth2Error as error:  # an invalid request: the protocol's error answer
            return server.handle_error_response(request, error)
        if request.method == "POST":
            subject = request.form.get("sub", "")
            if subject not in users:
                return login_form(request, f"unknown subject {subject}"), 200
            session["sub"] = subject
            # How this authentication went, as the test says: the ID tokens issued from it carry it.
            age = request.form.get("auth_age", "0")
            session["auth_time"] = int(time.time()) - (int(age) if age.isdigit() else 0)
            session["acr"] = request.form.get("acr", "")
            session["amr"] = [m for m in request.form.get("amr", "").replace(",", " ").split() if m]
            return server.create_authorization_response(grant_user=subject)
        signed_in = session.get("sub") in users
        max_age = request.values.get("max_age", "")
        if signed_in and max_age.isdigit() and time.time() - session.get("auth_time", 0) > int(max_age):
            signed_in = False  # authenticated too long ago for this client: ask again
        if signed_in and "login" not in prompt.split():
            return server.create_authorization_response(grant=grant, grant_user=session["sub"])
        if "none" in prompt.split():
            return server.create_authorization_response(grant=grant, grant_user=None)
        return login_form(request), 200

    def login_form(req, message: str = "") -> str:
        hidden = "".join(
            f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
            for name, value in req.values.items()
            if name not in ("sub", "acr", "amr", "auth_age")
        )
        return (
            f"<!doctype html><title>Strict provider</title><p>{escape(message)}</p>"
            f'<form method="post">{hidden}<input name="sub"><button type="submit">Sign in</button></form>'
        )

    @app.post("/token")
    def issue_token():
        return server.create_token_response()

    @app.route("/userinfo", methods=["GET", "POST"])
    def userinfo():
        return server.create_endpoint_response("userinfo")

    @app.route("/logout", methods=["GET", "POST"])
    def logout():
        answer = server.create_endpoint_response("end_session")
        return answer or "<!doctype html><title>Signed out</title><p>Signed out.</p>"

    @app.get("/session")
    def who_is_signed_in():
        """For the tests: who this browser is signed in as at the provider."""
        return jsonify(sub=session.get("sub"))

    return app


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    server = make_server("127.0.0.1", config["port"], build_app(config), threaded=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
