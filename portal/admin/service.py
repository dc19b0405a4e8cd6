"""Users, roles and their permissions."""

from __future__ import annotations

from sqlalchemy import select

from portal.access import BUILTIN_ROLES
from portal.auth.models import Role
from portal.extensions import db


def ensure_builtin_roles() -> None:
    """Create the built-in roles, and bring their permissions up to date with the code.

    Idempotent: run after every migration and by the demo-data loader."""
    existing = {role.name: role for role in db.session.scalars(select(Role))}
    for name, spec in BUILTIN_ROLES.items():
        permissions = sorted(str(p) for p in spec["permissions"])
        role = existing.get(name)
        if role is None:
            db.session.add(
                Role(name=name, label=spec["label"], permissions=permissions, builtin=True)
            )
        elif role.permissions != permissions or not role.builtin:
            role.permissions = permissions
            role.builtin = True
    db.session.commit()
