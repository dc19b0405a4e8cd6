"""Demo data for `make run`: each area contributes a loader; all are idempotent."""

from __future__ import annotations

from collections.abc import Callable

from portal.admin.service import ensure_builtin_roles

# Run in this order; each one must be safe to run again on a database that has its data.
DEMO_LOADERS: list[Callable[[], None]] = [
    ensure_builtin_roles,
]


def load_demo_data() -> None:
    for loader in DEMO_LOADERS:
        loader()
