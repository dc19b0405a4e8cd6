"""Identity rules: who may sign in, with which roles, and the break-glass local account."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from portal import audit
from portal.admin.service import grants_of, replace_grants, roles_for_groups
from portal.auth import mfa
from portal.auth.models import User
from portal.auth.sessions import end_sessions_of
from portal.extensions import db
from portal.models_base import utcnow
from portal.refusals import Refusal

MIN_PASSWORD_LENGTH = 12
# The break-glass account is locked after this many wrong passwords in a row, for this long
# (an administrator can lift the lockout sooner); the per-address rate limit is in the view.
LOCAL_SIGN_IN_MAX_FAILURES = 5
LOCAL_SIGN_IN_LOCKOUT = timedelta(minutes=30)
# Claims that say what the groups claim is missing (Entra ID's "groups overage": too many
# groups for a token, so it points at a Graph query instead).
DISTRIBUTED_CLAIM_NAMES = "_claim_names"
PASSWORD_METHOD = "scrypt"  # noqa: S105 - the name of the KDF, not a password


class SignInRefused(Exception):
    """Sign-in refused; `reason` is a stable code shown to the person and kept in the audit."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def load_user(user_id: str) -> User | None:
    if not user_id.isdigit():
        return None
    user = db.session.get(User, int(user_id))
    return user if user is not None and user.active else None


def save_locale(user: User, locale: str) -> None:
    user.locale = locale
    db.session.commit()


def groups_claim_names(setting: str) -> list[str]:
    """The claim names OIDC_GROUPS_CLAIM lists (commas or spaces between them)."""
    return [name for name in re.split(r"[,\s]+", setting or "") if name]


def _claim_at(claims: dict[str, Any], path: str) -> tuple[bool, Any]:
    """(present, value) of a claim; a dotted path walks into objects (realm_access.roles)."""
    if path in claims:  # a claim whose own name has dots (namespaced URLs) wins
        return True, claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def groups_from_claims(claims: dict[str, Any], groups_claim: str) -> list[str] | None:
    """The person's groups from the configured claim(s); None when none of them arrived at all
    (a provider that is not configured to send groups), which is not the same as an empty list
    (a person in no group). Values may be names, paths (/marketing/managers) or object ids."""
    found = False
    groups: set[str] = set()
    for name in groups_claim_names(groups_claim):
        present, value = _claim_at(claims, name)
        if not present or value is None:
            continue
        found = True
        values = [value] if isinstance(value, str | int) else value if isinstance(value, list) else []
        groups.update(str(group).strip() for group in values if str(group).strip())
    return sorted(groups) if found else None


def sign_in_from_claims(claims: dict[str, Any], groups_claim: str, address: str = "") -> User:
    """Find or create the user for validated claims (ID token and userinfo) and sync their SSO
    roles from the groups claim(s) `groups_claim` names.

    Refuses (and audits why) a person whose groups map to no role and who holds no role given
    in the portal, and a deactivated user. A groups claim that did not arrive at all is a
    provider that is not configured: the sign-in is refused and the person's roles are left as
    they were. With `groups_claim` empty (a provider without groups) roles are only the ones
    given in the portal: a first sign-in creates the account, without access until an
    administrator gives it a role. Commits."""
    subject = str(claims.get("sub") or "")
    email = str(claims.get("email") or "").strip().lower()
    if not subject or not email:
        _refuse(None, "missing_claims", {"sub": subject, "email": email, "claims": sorted(claims)}, address=address)
    names = groups_claim_names(groups_claim)
    groups_from_provider = bool(names)
    groups = groups_from_claims(claims, groups_claim) if groups_from_provider else []
    # A groups claim replaced by a pointer elsewhere (Entra ID's overage) is incomplete even when
    # another configured claim (roles) did arrive: the roles would silently lose those groups.
    overage = set(names) & set(claims.get(DISTRIBUTED_CLAIM_NAMES) or {})
    if groups is None or overage:
        reason = "groups_overage" if overage else "groups_missing"
        _refuse(None, reason, {"email": email, "expected": names, "claims": sorted(claims)}, address=address)
    role_ids = roles_for_groups(groups)
    user = db.session.scalar(select(User).where(User.sso_subject == subject))
    if user is None:
        if not role_ids and groups_from_provider:
            _refuse(None, "no_access", {"email": email, "groups": groups}, address=address)
        if db.session.scalar(select(User).where(User.email == email)):
            _refuse(None, "email_taken", {"email": email}, address=address)
        user = User(sso_subject=subject, email=email, name=str(claims.get("name") or ""))
        db.session.add(user)
        db.session.flush()
        audit.record(user, "user.created", f"user:{user.id}", {"email": email, "via": "sso"})
    if not user.active:
        _refuse(user, "deactivated", {"email": email}, address=address)
    before = grants_of(user.id)
    if groups_from_provider:
        replace_grants(user.id, role_ids, "sso")
        db.session.flush()
    after = grants_of(user.id)
    if after != before:
        audit.record(
            user,
            "user.roles_synced",
            f"user:{user.id}",
            {"groups": groups, "before": before, "after": after},
        )
    user.sso_groups = groups
    if not after:
        # Keep the change (no role left, sessions ended) and refuse.
        end_sessions_of(user.id)
        _refuse(user, "no_access", {"email": email, "groups": groups}, keep_changes=True, address=address)
    user.email = email
    user.name = str(claims.get("name") or user.name)
    user.last_sign_in_at = utcnow()
    audit.record(user, "sign_in.success", f"user:{user.id}", {"via": "sso", "groups": groups, **_where(address)})
    db.session.commit()
    db.session.expire(user)
    return user


def _where(address: str) -> dict[str, str]:
    """The client's address for the audit trail (the proxy's client when TRUSTED_PROXY_HOPS says so)."""
    return {"address": address} if address else {}


def _refuse(
    user: User | None, reason: str, details: dict[str, Any], keep_changes: bool = False, address: str = ""
) -> None:
    """Record a refused sign-in and commit it (the refusal itself must leave a trace)."""
    if not keep_changes:
        db.session.rollback()
    audit.record(user, "sign_in.failure", details.get("email", ""), {"reason": reason, **details, **_where(address)})
    db.session.commit()
    raise SignInRefused(reason)


def record_failed_sso(reason: str, detail: str, address: str = "") -> None:
    audit.record(
        None, "sign_in.failure", "", {"reason": reason, "detail": detail[:500], "via": "sso", **_where(address)}
    )
    db.session.commit()


def groups_seen(since, limit: int = 200) -> list[tuple[str, int]]:
    """The group values that arrived at sign-ins since `since` (successful or refused), with how
    many different people carried each, most common first: what an administrator maps."""
    from portal.audit import AuditEvent

    events = db.session.execute(
        select(AuditEvent.actor_id, AuditEvent.target, AuditEvent.details).where(
            AuditEvent.action.in_(("sign_in.success", "sign_in.failure")), AuditEvent.created_at >= since
        )
    )
    people: dict[str, set[str]] = {}
    for actor_id, target, details in events:
        groups = (details or {}).get("groups")
        if not isinstance(groups, list):
            continue
        person = str(actor_id or (details or {}).get("email") or target)
        for group in groups:
            people.setdefault(str(group), set()).add(person)
    ranked = sorted(people.items(), key=lambda item: (-len(item[1]), item[0]))
    return [(group, len(who)) for group, who in ranked[:limit]]


def record_sign_out(user: User) -> None:
    end_sessions_of(user.id)
    audit.record(user, "sign_out", f"user:{user.id}")
    db.session.commit()


# --- break-glass local administrator ---------------------------------------------------------


def create_local_admin(email: str) -> tuple[User, str]:
    """Create (or reset) the local administrator; returns it with a one-time password that
    must be changed at first sign-in, where its second factor (TOTP) is enrolled too."""
    from portal.auth.models import Role

    email = email.strip().lower()
    password = secrets.token_urlsafe(12)
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None:
        user = User(email=email, name="Local administrator")
        db.session.add(user)
        db.session.flush()
    elif not user.is_local:
        raise ValueError(f"{email} signs in through SSO; choose another address for the local account")
    user.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)
    user.must_change_password = True
    user.active = True
    # A reset account enrols its second factor again, with the new password.
    mfa.forget_second_factor(user)
    admin = db.session.scalar(select(Role).where(Role.name == "administrator"))
    replace_grants(user.id, {admin.id}, "manual")
    audit.record(None, "local_admin.created", f"user:{user.id}", {"email": email})
    db.session.commit()
    return user, password


def sign_in_locally(email: str, password: str, address: str = "") -> User:
    """The break-glass sign-in's first step, the password. Wrong passwords are counted per
    account: after LOCAL_SIGN_IN_MAX_FAILURES in a row the account is locked for
    LOCAL_SIGN_IN_LOCKOUT (or until an administrator lifts it), whatever address the attempts
    come from.

    An account with a second factor is not signed in yet: the caller asks for its code next
    (`finish_local_sign_in`), and the failure count goes on until the code is right. An account
    that has not enrolled one (a new or reset account, with its one-time password) is signed in
    here, and can do nothing but change its password and enrol (the views see to that)."""
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.is_local or not user.password_hash:
        # Same work and same answer whether or not the account exists.
        check_password_hash(generate_password_hash("x", method=PASSWORD_METHOD), password)
        _refuse(None, "bad_credentials", {"email": email.strip().lower(), "via": "local"}, address=address)
    now = utcnow()
    locked = is_locked(user)
    if not check_password_hash(user.password_hash, password) or locked:
        if locked:
            _refuse(user, "locked", {"email": user.email, "via": "local"}, address=address)
        _count_failure(user, now, address)
        _refuse(user, "bad_credentials", {"email": user.email, "via": "local"}, keep_changes=True, address=address)
    if not user.active:
        _refuse(user, "deactivated", {"email": user.email, "via": "local"}, address=address)
    if user.has_second_factor:
        return user
    _signed_in_locally(user, now, "none", address)
    return user


def finish_local_sign_in(user_id: int, code: str, address: str = "") -> User:
    """The break-glass sign-in's second step: a TOTP code (or a recovery code) after the right
    password. Wrong codes count towards the same lockout as wrong passwords."""
    user = db.session.get(User, user_id)
    if user is None or not user.is_local:
        _refuse(None, "bad_credentials", {"via": "local"}, address=address)
    if is_locked(user):
        _refuse(user, "locked", {"email": user.email, "via": "local"}, address=address)
    if not user.active:
        _refuse(user, "deactivated", {"email": user.email, "via": "local"}, address=address)
    now = utcnow()
    try:
        factor = mfa.verify_code(user, code, now)
    except mfa.SecondFactorRefused as refused:
        db.session.rollback()
        _count_failure(user, now, address)
        _refuse(
            user,
            "bad_code",
            {"email": user.email, "via": "local", "replayed": bool(refused.params.get("replayed"))},
            keep_changes=True,
            address=address,
        )
    _signed_in_locally(user, now, factor, address)
    return user


def confirm_local_step_up(user: User, code: str, address: str = "") -> str:
    """A signed-in break-glass administrator confirms a high-risk action with a TOTP code (or a
    recovery code); returns which it was. Wrong codes count towards the sign-in lockout, and a
    locked account confirms nothing. Refuses with mfa.SecondFactorRefused."""
    if is_locked(user):
        raise mfa.SecondFactorRefused("locked")
    now = utcnow()
    try:
        factor = mfa.verify_code(user, code, now)
    except mfa.SecondFactorRefused as refused:
        db.session.rollback()
        _count_failure(user, now, address)
        audit.record(
            user,
            "step_up.refused",
            f"user:{user.id}",
            {"via": "local", "reason": refused.reason, **_where(address)},
        )
        db.session.commit()
        raise
    user.failed_sign_ins = 0
    audit.record(user, "step_up.confirmed", f"user:{user.id}", {"via": "local", "factor": factor, **_where(address)})
    db.session.commit()
    return factor


def _count_failure(user: User, now, address: str) -> None:
    """One more wrong password or code in a row; the last one allowed locks the account."""
    user.failed_sign_ins += 1
    if user.failed_sign_ins >= LOCAL_SIGN_IN_MAX_FAILURES:
        user.locked_until = now + LOCAL_SIGN_IN_LOCKOUT
        user.failed_sign_ins = 0
        audit.record(user, "local_sign_in.locked", f"user:{user.id}", {"email": user.email, **_where(address)})


def _signed_in_locally(user: User, now, factor: str, address: str) -> None:
    user.failed_sign_ins = 0
    user.locked_until = None
    user.last_sign_in_at = now
    audit.record(user, "sign_in.success", f"user:{user.id}", {"via": "local", "factor": factor, **_where(address)})
    db.session.commit()


def is_locked(user: User) -> bool:
    return user.locked_until is not None and user.locked_until > utcnow()


def lift_lockout(actor: User, user_id: int) -> None:
    """An administrator ends a break-glass account's sign-in lockout before it runs out."""
    user = db.session.get(User, user_id)
    if user is None or not is_locked(user):
        return
    user.locked_until = None
    user.failed_sign_ins = 0
    audit.record(actor, "local_sign_in.unlocked", f"user:{user.id}", {"email": user.email})
    db.session.commit()


class PasswordRejected(Refusal):
    messages = {
        "sso_account": _l("This account signs in through SSO."),
        "wrong_current": _l("The current password is wrong."),
        "too_short": _l("Use at least %(length)s characters."),
        "unchanged": _l("The new password must differ from the current one."),
    }


def change_local_password(user: User, current: str, new: str, keep_session_id: str | None = None) -> None:
    """Replace the break-glass password; every other session of the account ends (a stolen
    session must not survive the password change), the one `keep_session_id` names goes on."""
    if not user.is_local or not user.password_hash:
        raise PasswordRejected("sso_account")
    if not check_password_hash(user.password_hash, current):
        raise PasswordRejected("wrong_current")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected("too_short", length=MIN_PASSWORD_LENGTH)
    if new == current:
        raise PasswordRejected("unchanged")
    user.password_hash = generate_password_hash(new, method=PASSWORD_METHOD)
    user.must_change_password = False
    ended = end_sessions_of(user.id, except_session_id=keep_session_id)
    audit.record(user, "local_password.changed", f"user:{user.id}", {"other_sessions_ended": ended})
    db.session.commit()
