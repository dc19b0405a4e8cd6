"""Demo data for `make run`: each area contributes a loader; all are idempotent."""

from __future__ import annotations

from collections.abc import Callable

from portal.admin.service import add_mapping, ensure_builtin_roles


def demo_sso_mapping() -> None:
    """Map the development provider's groups to the built-in roles."""
    from portal.dev.identities import DEMO_GROUP_ROLES

    for group, role in DEMO_GROUP_ROLES.items():
        add_mapping(None, group, role)


# Run in this order; each one must be safe to run again on a database that has its data.
DEMO_LOADERS: list[Callable[[], None]] = [
    ensure_builtin_roles,
    demo_sso_mapping,
]


def load_demo_data() -> None:
    for loader in DEMO_LOADERS:
        loader()
