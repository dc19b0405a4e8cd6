"""People who use the portal and the roles that say what they may do."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cached_property

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, Boolean, Column, ForeignKey, Integer, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.access import Permission
from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

user_roles = Table(
    "user_roles",
    db.metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", Integer, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    # "sso": granted by the person's IdP groups, re-synced at every sign-in;
    # "manual": granted in the portal by an administrator or manager, kept across sign-ins.
    Column("source", String(8), nullable=False, server_default="manual"),
)


class Role(db.Model):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Role {self.name}>"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The identity provider's stable subject; null for the break-glass local account.
    sso_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    locale: Mapped[str | None] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    # The groups the identity provider sent at the last sign-in: a mapping change is applied
    # to everyone at once, not only at their next sign-in.
    sso_groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Break-glass account only: wrong passwords in a row, and the lockout they led to.
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Break-glass account only: its TOTP (RFC 6238) second factor, and the time step of the last
    # code accepted (a code is never accepted twice, nor an older one after it).
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    totp_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Read-only: grants are written by portal.admin.service, which keeps their source.
    roles: Mapped[list[Role]] = relationship(secondary=user_roles, lazy="selectin", viewonly=True)

    @property
    def is_local(self) -> bool:
        """The break-glass account signs in with a password, not through SSO."""
        return self.sso_subject is None

    @property
    def has_second_factor(self) -> bool:
        """The break-glass account has enrolled its authenticator app."""
        return bool(self.totp_secret)

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    @cached_property
    def permissions(self) -> frozenset[Permission]:
        return permissions_of(role.permissions for role in self.roles)

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def display_name(self) -> str:
        return display_name_of(self.name, self.email)

    def __repr__(self) -> str:
        return f"<User {self.email}>"


def display_name_of(name: str | None, email: str) -> str:
    """How a person is named on pages: their name, else their email address."""
    return name or email


def permissions_of(granted: Iterable[list[str]]) -> frozenset[Permission]:
    """The permissions the roles' lists of permission names give (a name the code no longer
    knows is ignored)."""
    found: set[Permission] = set()
    for names in granted:
        for name in names:
            try:
                found.add(Permission(name))
            except ValueError:  # a permission removed from the code; ignore it
                continue
    return frozenset(found)


class RecoveryCode(db.Model):
    """A one-time code that stands in for the break-glass account's TOTP code (a lost phone).
    Only its hash is kept; the codes are shown once, when they are made."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SsoGroupMapping(db.Model):
    """An identity-provider group that grants a portal role at sign-in."""

    __tablename__ = "sso_group_mappings"
    __table_args__ = (UniqueConstraint("group_name", "role_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    group_name: Mapped[str] = mapped_column(String(255), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    role: Mapped[Role] = relationship(lazy="joined")


class WebSession(db.Model):
    """A signed-in browser session, held on the server (anonymous ones are signed cookies).

    The cookie carries only a random id; the row is found by its SHA-256 so that a copy of
    this table cannot be replayed as cookies. Deleting the rows ends the sessions at once."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
