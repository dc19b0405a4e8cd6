"""Identity rules: who may sign in, with which roles, and the break-glass local account."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from portal import audit
from portal.admin.service import grants_of, replace_grants, roles_for_groups
from portal.auth.models import User
from portal.auth.sessions import end_sessions_of
from portal.extensions import db
from portal.models_base import utcnow

MIN_PASSWORD_LENGTH = 12
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


def _groups(claims: dict[str, Any], groups_claim: str) -> list[str]:
    value = claims.get(groups_claim) or []
    if isinstance(value, str):
        value = [value]
    return sorted({str(group) for group in value if str(group).strip()})


def sign_in_from_claims(claims: dict[str, Any], groups_claim: str) -> User:
    """Find or create the user for validated ID-token claims and sync their SSO roles.

    Refuses (and audits why) a person whose groups map to no role and who holds no role
    given in the portal, and a deactivated user. Commits."""
    subject = str(claims.get("sub") or "")
    email = str(claims.get("email") or "").strip().lower()
    if not subject or not email:
        _refuse(None, "missing_claims", {"sub": subject, "email": email})
    groups = _groups(claims, groups_claim)
    role_ids = roles_for_groups(groups)
    user = db.session.scalar(select(User).where(User.sso_subject == subject))
    if user is None:
        if not role_ids:
            _refuse(None, "no_access", {"email": email, "groups": groups})
        if db.session.scalar(select(User).where(User.email == email)):
            _refuse(None, "email_taken", {"email": email})
        user = User(sso_subject=subject, email=email, name=str(claims.get("name") or ""))
        db.session.add(user)
        db.session.flush()
        audit.record(user, "user.created", f"user:{user.id}", {"email": email, "via": "sso"})
    if not user.active:
        _refuse(user, "deactivated", {"email": email})
    before = grants_of(user.id)
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
        _refuse(user, "no_access", {"email": email, "groups": groups}, keep_changes=True)
    user.email = email
    user.name = str(claims.get("name") or user.name)
    user.last_sign_in_at = utcnow()
    audit.record(user, "sign_in.success", f"user:{user.id}", {"via": "sso", "groups": groups})
    db.session.commit()
    db.session.expire(user)
    return user


def _refuse(user: User | None, reason: str, details: dict[str, Any], keep_changes: bool = False) -> None:
    """Record a refused sign-in and commit it (the refusal itself must leave a trace)."""
    if not keep_changes:
        db.session.rollback()
    audit.record(user, "sign_in.failure", details.get("email", ""), {"reason": reason, **details})
    db.session.commit()
    raise SignInRefused(reason)


def record_failed_sso(reason: str, detail: str) -> None:
    audit.record(None, "sign_in.failure", "", {"reason": reason, "detail": detail[:500], "via": "sso"})
    db.session.commit()


def record_sign_out(user: User) -> None:
    end_sessions_of(user.id)
    audit.record(user, "sign_out", f"user:{user.id}")
    db.session.commit()


# --- break-glass local administrator ---------------------------------------------------------


def create_local_admin(email: str) -> tuple[User, str]:
    """Create (or reset) the local administrator; returns it with a one-time password that
    must be changed at first sign-in."""
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
    admin = db.session.scalar(select(Role).where(Role.name == "administrator"))
    replace_grants(user.id, {admin.id}, "manual")
    audit.record(None, "local_admin.created", f"user:{user.id}", {"email": email})
    db.session.commit()
    return user, password


def sign_in_locally(email: str, password: str) -> User:
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or not user.is_local or not user.password_hash:
        # Same work and same answer whether or not the account exists.
        check_password_hash(generate_password_hash("x", method=PASSWORD_METHOD), password)
        _refuse(None, "bad_credentials", {"email": email.strip().lower(), "via": "local"})
    if not check_password_hash(user.password_hash, password):
        _refuse(user, "bad_credentials", {"email": user.email, "via": "local"})
    if not user.active:
        _refuse(user, "deactivated", {"email": user.email, "via": "local"})
    user.last_sign_in_at = utcnow()
    audit.record(user, "sign_in.success", f"user:{user.id}", {"via": "local"})
    db.session.commit()
    return user


class PasswordRejected(Exception):
    pass


def change_local_password(user: User, current: str, new: str) -> None:
    if not user.is_local or not user.password_hash:
        raise PasswordRejected("This account signs in through SSO.")
    if not check_password_hash(user.password_hash, current):
        raise PasswordRejected("The current password is wrong.")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected(f"Use at least {MIN_PASSWORD_LENGTH} characters.")
    if new == current:
        raise PasswordRejected("The new password must differ from the current one.")
    user.password_hash = generate_password_hash(new, method=PASSWORD_METHOD)
    user.must_change_password = False
    audit.record(user, "local_password.changed", f"user:{user.id}")
    db.session.commit()
