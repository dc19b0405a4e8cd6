"""Configuration: defaults < instance/config.py < environment variables.

Only constants live at module level; `load_config` is called by `create_app`.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

DEV_SECRET_KEY = "dev-only-secret-change-me"  # noqa: S105 - refused in production below
# Production refuses a SECRET_KEY shorter than this (in bytes) or one of the well-known values.
MIN_SECRET_KEY_BYTES = 32
KNOWN_SECRET_KEYS = frozenset(
    {
        DEV_SECRET_KEY,
        "test-secret-key-not-for-production",
        "change-me",
        "changeme",
        "secret",
        "secret-key",
        "your-secret-key",
        "super-secret-key",
    }
)

# Names read from the environment, with the type each one is parsed into.
ENV_SETTINGS: dict[str, type] = {
    "PORTAL_ENV": str,
    "DATABASE_URL": str,
    "REDIS_URL": str,
    "SECRET_KEY": str,
    "OIDC_ISSUER": str,
    "OIDC_CLIENT_ID": str,
    "OIDC_CLIENT_SECRET": str,
    "OIDC_GROUPS_CLAIM": str,
    "OIDC_SCOPES": str,
    "OIDC_TOKEN_AUTH_METHOD": str,
    "OIDC_POST_LOGOUT_REDIRECT": str,
    "OIDC_MFA_ACR": str,
    "OIDC_MFA_AMR": str,
    "MFA_REQUIRED": bool,
    "STEP_UP_MINUTES": int,
    "TRUSTED_PROXY_HOPS": int,
    "SMTP_URL": str,
    "MAIL_FROM": str,
    "OUTBOX_DIR": str,
    "STORAGE_DIR": str,
    "STORAGE_BACKEND": str,
    "DATABASE_IDLE_TRANSACTION_SECONDS": int,
    "LOCAL_LOGIN": bool,
    "PUBLIC_BASE_URL": str,
    "SESSION_IDLE_MINUTES": int,
    "SESSION_ABSOLUTE_HOURS": int,
    "AUDIT_RETENTION_DAYS": int,
    "API_MAX_BODY_BYTES": int,
    "RATELIMIT_STORAGE_URI": str,
    "SMS_OPT_OUT_TEXT": str,
    "COMPANY_EMAIL_DOMAINS": str,
    "COMPANY_TEST_MOBILES": str,
    "DKIM_PRIVATE_KEY_PATH": str,
    "DKIM_SELECTOR": str,
    "DKIM_DOMAIN": str,
    "UNSUBSCRIBE_MAILTO": str,
    "SMS_API_URL": str,
    "SMS_API_SECRET": str,
    "SMS_SIGN_NAME": str,
    "WECOM_WEBHOOK_URL": str,
    "WECOM_API_URL": str,
    "WECOM_CORP_ID": str,
    "WECOM_CONTACT_SECRET": str,
    "PACING_WINDOW_SECONDS": int,
    "DELIVERY_BATCH_SIZE": int,
    "DELIVERY_LEASE_SECONDS": int,
    "DELIVERY_RETRY_DELAYS": str,
    "DELIVERY_CHANNEL_BACKOFF_SECONDS": int,
    "SENDERS_PER_CAMPAIGN": int,
    "SENDER_JOB_SECONDS": int,
    "REPORT_FONT_PATH": str,
    "REPORT_ROLLUP_MAX_AGE_SECONDS": int,
}


def _defaults(instance_path: str) -> dict[str, Any]:
    return {
        # development | testing | production
        "PORTAL_ENV": "development",
        "DATABASE_URL": "sqlite:///" + str(Path(instance_path) / "portal.db"),
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "SECRET_KEY": DEV_SECRET_KEY,
        "OIDC_ISSUER": "http://127.0.0.1:9400",
        "OIDC_CLIENT_ID": "marketing-portal",
        "OIDC_CLIENT_SECRET": "dev-client-secret",
        # The claim(s) holding the person's groups: a dotted path reaches into an object
        # (Keycloak's realm_access.roles); several names separated by commas are read together
        # (Entra ID's "groups,roles"); empty = the provider sends no groups (Google Workspace)
        # and roles are given in the portal.
        "OIDC_GROUPS_CLAIM": "groups",
        # Okta and Authing release groups only for a `groups` scope.
        "OIDC_SCOPES": "openid email profile",
        # How the portal authenticates at the token endpoint: client_secret_basic or client_secret_post.
        "OIDC_TOKEN_AUTH_METHOD": "client_secret_basic",
        # Where the provider sends the browser after sign-out; empty = the portal's sign-in page.
        "OIDC_POST_LOGOUT_REDIRECT": "",
        # High-risk actions (bulk export, privacy requests, bulk edits, deletions): the
        # `acr_values` the portal asks the provider for when it re-authenticates the person
        # (space separated; e.g. Keycloak's LoA "gold", Entra's custom "c1"); an answer whose `acr`
        # is one of them counts as a second factor. Empty = ask for none, rely on `amr`.
        "OIDC_MFA_ACR": "",
        # The `amr` values (RFC 8176) that count as a second factor when the ID token lists one.
        "OIDC_MFA_AMR": "mfa otp hwk swk sms fpt face",
        # High-risk actions need a second factor confirmed within STEP_UP_MINUTES (company SSO:
        # acr/amr above; the break-glass account: its TOTP code). Off = a fresh sign-in is enough.
        "MFA_REQUIRED": True,
        "STEP_UP_MINUTES": 10,
        # Reverse proxies in front of the portal whose X-Forwarded-For/-Proto/-Host are trusted.
        "TRUSTED_PROXY_HOPS": 0,
        "SMTP_URL": "smtp://127.0.0.1:8025",
        "MAIL_FROM": "Marketing <marketing@example.com>",
        # The development SMTP sink writes here and the Outbox page reads it; unset in production.
        "OUTBOX_DIR": "",
        # Where files that one host writes and another reads are kept: `database` (chunks in
        # the stored_files tables, every host reads them) or `folder` (STORAGE_DIR, which all
        # hosts must then share). With the database, STORAGE_DIR holds only local copies.
        "STORAGE_BACKEND": "database",
        "STORAGE_DIR": str(Path(instance_path) / "storage"),
        "LOCAL_LOGIN": True,
        "PUBLIC_BASE_URL": "http://127.0.0.1:5000",
        "SESSION_IDLE_MINUTES": 60,
        "SESSION_ABSOLUTE_HOURS": 12,
        "AUDIT_RETENTION_DAYS": 180,
        # The events API reads at most this much of a request's body (413 beyond).
        "API_MAX_BODY_BYTES": 1024 * 1024,
        "RATELIMIT_STORAGE_URI": "",
        # Every marketing SMS must carry this opt-out instruction.
        "SMS_OPT_OUT_TEXT": "回T退订",
        # Test sends go only to addresses at these domains (comma separated).
        "COMPANY_EMAIL_DOMAINS": "example.com",
        # Test SMS and WeCom messages go only to these company mobiles (comma separated, E.164;
        # an entry ending in * allows every number that starts with it).
        "COMPANY_TEST_MOBILES": "",
        # DKIM signing of outgoing email when all three are set (PEM RSA key file).
        "DKIM_PRIVATE_KEY_PATH": "",
        "DKIM_SELECTOR": "",
        "DKIM_DOMAIN": "",
        # Address for List-Unsubscribe's mailto: alternative; empty = HTTPS one-click only.
        "UNSUBSCRIBE_MAILTO": "",
        # SMS gateway (HMAC-signed JSON) and WeCom group robot webhook; empty = channel off.
        "SMS_API_URL": "",
        "SMS_API_SECRET": "",
        "SMS_SIGN_NAME": "",
        "WECOM_WEBHOOK_URL": "",
        # WeCom customer contact (messages to customers as mass-send tasks of their owning
        # employee): the corp id and the customer-contact app's secret; empty = channel off.
        "WECOM_API_URL": "https://qyapi.weixin.qq.com",
        "WECOM_CORP_ID": "",
        "WECOM_CONTACT_SECRET": "",
        # The window of the per-destination pacing limits (settings pacing.*), in seconds.
        "PACING_WINDOW_SECONDS": 60,
        # The send pipeline: deliveries claimed per batch; how long a claim is leased (a dead
        # sender's claim is taken over after this); seconds to wait after the 1st, 2nd, ...
        # temporary refusal of a recipient (then it is a soft bounce); seconds to wait when a
        # channel cannot be reached at all; sender jobs per running campaign; and how long one
        # sender job runs before it makes room for others (the runner starts the next one).
        "DELIVERY_BATCH_SIZE": 1000,
        "DELIVERY_LEASE_SECONDS": 300,
        "DELIVERY_RETRY_DELAYS": "60,300,1800,7200",
        "DELIVERY_CHANNEL_BACKOFF_SECONDS": 30,
        "SENDERS_PER_CAMPAIGN": 2,
        "SENDER_JOB_SECONDS": 30,
        # A TrueType font with Chinese for PDF reports; empty = a font found on the system.
        "REPORT_FONT_PATH": "",
        # The dashboard's figures come from rollups refreshed in the background; a page never
        # shows rollups older than this (it refreshes them first).
        "REPORT_ROLLUP_MAX_AGE_SECONDS": 60,
        "LANGUAGES": ["zh_CN", "en"],
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
        "WTF_CSRF_TIME_LIMIT": None,
        # JSON stored as written (not \u-escaped): SQLite's json_extract cannot find escaped keys.
        # No ping before each use (a round trip on every request): portal.check_pooled_connections
        # finds a connection the server has closed without one.
        "SQLALCHEMY_ENGINE_OPTIONS": {"json_serializer": _json_dumps},
        # PostgreSQL ends a transaction left idle this long: a host cut off from the network
        # mid-transaction (its claim of deliveries not yet committed) holds its row locks no
        # longer than a sender's lease, instead of until TCP gives up on it (hours). 0 = never.
        "DATABASE_IDLE_TRANSACTION_SECONDS": 300,
    }


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _parse(kind: type, raw: str) -> Any:
    if kind is bool:
        return raw.strip().lower() not in {"0", "false", "no", "off", ""}
    return kind(raw)


def load_config(instance_path: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the merged settings: defaults, then instance/config.py, then the environment,
    then `overrides` (tests)."""
    values = _defaults(instance_path)
    instance_file = Path(instance_path) / "config.py"
    if instance_file.exists():
        namespace: dict[str, Any] = {}
        exec(compile(instance_file.read_text(), str(instance_file), "exec"), namespace)  # noqa: S102 - operator's own file
        values.update({k: v for k, v in namespace.items() if k.isupper()})
    for name, kind in ENV_SETTINGS.items():
        if name in os.environ:
            values[name] = _parse(kind, os.environ[name])
    values.update(overrides or {})

    if values["STORAGE_BACKEND"] not in ("database", "folder"):
        raise RuntimeError(f"STORAGE_BACKEND must be database or folder, not {values['STORAGE_BACKEND']!r}")
    production = values["PORTAL_ENV"] == "production"
    if production:
        check_secret_key(values["SECRET_KEY"])
    values["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(values["DATABASE_URL"])
    idle_seconds = int(values["DATABASE_IDLE_TRANSACTION_SECONDS"])
    if values["SQLALCHEMY_DATABASE_URI"].startswith("postgresql") and idle_seconds > 0:
        options = dict(values["SQLALCHEMY_ENGINE_OPTIONS"])
        connect_args = dict(options.get("connect_args", {}))
        connect_args["options"] = (
            f"{connect_args.get('options', '')} -c idle_in_transaction_session_timeout={idle_seconds * 1000}"
        ).strip()
        options["connect_args"] = connect_args
        values["SQLALCHEMY_ENGINE_OPTIONS"] = options
    values["TESTING"] = values["PORTAL_ENV"] == "testing"
    values["SESSION_COOKIE_HTTPONLY"] = True
    values["SESSION_COOKIE_SAMESITE"] = "Lax"
    values["SESSION_COOKIE_SECURE"] = production
    values["REMEMBER_COOKIE_SECURE"] = production
    values["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=values["SESSION_ABSOLUTE_HOURS"])
    values["RATELIMIT_STORAGE_URI"] = values["RATELIMIT_STORAGE_URI"] or values["REDIS_URL"]
    return values


def check_secret_key(secret: str | bytes | None) -> None:
    """Refuse a production SECRET_KEY that is empty, short or a well-known value: it signs the
    session cookies, CSRF tokens and the tracking and unsubscribe links."""
    raw = secret.encode() if isinstance(secret, str) else (secret or b"")
    if not raw.strip():
        raise RuntimeError("SECRET_KEY is empty: set it to a private random value in production")
    if raw.decode(errors="replace") in KNOWN_SECRET_KEYS:
        raise RuntimeError("SECRET_KEY is a well-known default: set it to a private random value in production")
    if len(raw) < MIN_SECRET_KEY_BYTES:
        raise RuntimeError(f"SECRET_KEY is shorter than {MIN_SECRET_KEY_BYTES} bytes: generate a longer one")


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever scheme the operator wrote."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
