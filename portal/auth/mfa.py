"""Second factors for high-risk actions: what the company provider says (the ID token's `acr`
and `amr`), and the break-glass account's own TOTP (RFC 6238, through pyotp) with one-time
recovery codes.

Service functions in the house style: plain values and the acting user in, a domain error with
a code out (`SecondFactorRefused`), every outcome audited in the transaction that records it."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyotp
import pyotp.exceptions
import segno
from sqlalchemy import select, update
from werkzeug.security import check_password_hash, generate_password_hash

from portal import audit
from portal.auth.models import RecoveryCode, User
from portal.extensions import db
from portal.models_base import utcnow

# TOTP: 30-second steps, 6 digits (what every authenticator app does by default); a code of the
# step before or after is accepted too, for a phone whose clock is a little off.
TOTP_DIGITS = 6
TOTP_INTERVAL = 30
TOTP_DRIFT_STEPS = 1
TOTP_ISSUER = "Marketing portal"
RECOVERY_CODE_COUNT = 10
# A recovery code: 10 characters of an alphabet without look-alikes (50 bits), shown as xxxxx-xxxxx.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_CODE_LENGTH = 10
PASSWORD_METHOD = "scrypt"  # noqa: S105 - the name of the KDF, not a password


class SecondFactorRefused(Exception):
    """The second factor was not confirmed; `reason` is a stable code (the page makes the sentence)."""

    def __init__(self, reason: str, **params: Any):
        super().__init__(reason)
        self.reason = reason
        self.params = params


# --- the company provider --------------------------------------------------------------------


def setting_values(setting: str) -> frozenset[str]:
    """The values a setting lists, separated by spaces or commas."""
    return frozenset(value for value in re.split(r"[,\s]+", setting or "") if value)


@dataclass(frozen=True)
class ProviderFactors:
    """How the provider says the person authenticated: its `acr` and `amr` claims, as sent."""

    acr: str | None
    amr: list[str]

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> ProviderFactors:
        acr = claims.get("acr")
        amr = claims.get("amr")
        return cls(
            acr=str(acr) if isinstance(acr, str | int) and not isinstance(acr, bool) else None,
            amr=[str(value) for value in amr] if isinstance(amr, list) else [],
        )

    def confirm_a_second_factor(self, accepted_acr: str, accepted_amr: str) -> bool:
        """The `acr` is one the administrator set (OIDC_MFA_ACR), or `amr` lists a method that
        is a second factor (OIDC_MFA_AMR, by default RFC 8176's mfa otp hwk swk sms fpt face)."""
        if self.acr is not None and self.acr in setting_values(accepted_acr):
            return True
        return bool(set(self.amr) & setting_values(accepted_amr))

    def as_details(self) -> dict[str, Any]:
        return {"acr": self.acr or "", "amr": list(self.amr)}


def record_provider_step_up(user: User, factors: ProviderFactors, address: str = "") -> None:
    """The provider confirmed a second factor at a re-authentication the portal asked for."""
    audit.record(
        user, "step_up.confirmed", f"user:{user.id}", {"via": "sso", **factors.as_details(), **_where(address)}
    )
    db.session.commit()


def record_provider_step_up_refused(claims: dict[str, Any], factors: ProviderFactors, address: str = "") -> None:
    """The provider re-authenticated the person without a second factor the portal accepts:
    the administrator sees what did arrive, to fix the provider's policy or OIDC_MFA_*."""
    subject = str(claims.get("sub") or "")
    user = db.session.scalar(select(User).where(User.sso_subject == subject)) if subject else None
    target = f"user:{user.id}" if user is not None else str(claims.get("email") or subject)
    audit.record(
        user,
        "step_up.refused",
        target,
        {"via": "sso", "reason": "no_second_factor", **factors.as_details(), **_where(address)},
    )
    db.session.commit()


def _where(address: str) -> dict[str, str]:
    return {"address": address} if address else {}


# --- the break-glass account's TOTP ----------------------------------------------------------


def new_totp_secret() -> str:
    return pyotp.random_base32()


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_INTERVAL)


def provisioning_uri(secret: str, email: str) -> str:
    return _totp(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def qr_code_svg(uri: str, title: str) -> str:
    """The QR code of `uri` as SVG markup for the page itself (no image URL, no data: URI)."""
    return segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff", title=title)


def matching_step(secret: str, code: str, now: datetime | None = None) -> int | None:
    """The time step whose code `code` is (within the drift allowed), or None."""
    code = re.sub(r"\s+", "", code or "")
    if not re.fullmatch(rf"\d{{{TOTP_DIGITS}}}", code):
        return None
    try:
        return _totp(secret).verify_and_get_timecode(code, for_time=now or utcnow(), valid_window=TOTP_DRIFT_STEPS)
    except pyotp.exceptions.OTPVerificationError:
        return None


def enrol_totp(user: User, secret: str, code: str) -> list[str]:
    """Keep `secret` as the break-glass account's second factor once `code` shows the person's
    app holds it; returns RECOVERY_CODE_COUNT new recovery codes, to be shown once. Refuses
    with "bad_code"; an SSO account has nothing to enrol ("not_local")."""
    if not user.is_local:
        raise SecondFactorRefused("not_local")
    step = matching_step(secret, code)
    if step is None:
        raise SecondFactorRefused("bad_code")
    user.totp_secret = secret
    user.totp_last_step = step
    user.totp_enrolled_at = utcnow()
    codes = _replace_recovery_codes(user)
    audit.record(user, "totp.enrolled", f"user:{user.id}", {"recovery_codes": len(codes)})
    db.session.commit()
    return codes


def _replace_recovery_codes(user: User) -> list[str]:
    db.session.execute(RecoveryCode.__table__.delete().where(RecoveryCode.user_id == user.id))
    codes = []
    for _ in range(RECOVERY_CODE_COUNT):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_CODE_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
        db.session.add(RecoveryCode(user_id=user.id, code_hash=generate_password_hash(raw, method=PASSWORD_METHOD)))
    return codes


def remaining_recovery_codes(user_id: int) -> int:
    return len(
        db.session.scalars(
            select(RecoveryCode.id).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        ).all()
    )


def forget_second_factor(user: User) -> None:
    """A reset break-glass account enrols again (in the caller's transaction)."""
    user.totp_secret = None
    user.totp_last_step = None
    user.totp_enrolled_at = None
    db.session.execute(RecoveryCode.__table__.delete().where(RecoveryCode.user_id == user.id))


def verify_code(user: User, code: str, now: datetime | None = None) -> str:
    """Check a TOTP code or a recovery code for the break-glass account, in the caller's
    transaction; returns which it was ("totp" or "recovery_code"). A TOTP code is accepted at
    most once, and never one older than the last accepted; a recovery code only once. Raises
    SecondFactorRefused("bad_code"), or ("not_enrolled")."""
    if not user.is_local or not user.totp_secret:
        raise SecondFactorRefused("not_enrolled")
    step = matching_step(user.totp_secret, code, now)
    if step is not None:
        if user.totp_last_step is not None and step <= user.totp_last_step:
            raise SecondFactorRefused("bad_code", replayed=True)
        # Compare-and-set: two requests with the same code cannot both win.
        taken = db.session.execute(
            update(User)
            .where(User.id == user.id, (User.totp_last_step.is_(None)) | (User.totp_last_step < step))
            .values(totp_last_step=step)
        ).rowcount
        if not taken:
            raise SecondFactorRefused("bad_code", replayed=True)
        user.totp_last_step = step
        return "totp"
    if _use_recovery_code(user.id, code, now or utcnow()):
        return "recovery_code"
    raise SecondFactorRefused("bad_code")


def _use_recovery_code(user_id: int, code: str, now: datetime) -> bool:
    raw = re.sub(r"[\s-]+", "", (code or "").lower())
    if len(raw) != RECOVERY_CODE_LENGTH or any(char not in RECOVERY_ALPHABET for char in raw):
        return False
    unused = db.session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    ).all()
    for candidate in unused:
        if check_password_hash(candidate.code_hash, raw):
            used = db.session.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == candidate.id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
            ).rowcount
            return bool(used)
    return False
