"""Values computed at most once per age limit in each process: aggregates many people read at
once (the reports' figures, the home page's counts) cost one computation per period, not one
per page view. A cache only: every process computes its own, and nothing is lost with it.

A value carries the version of what it was computed from (the rollups' generation). While the
version holds, the value is as fresh as its source; once the version moves on, or the value is
past half its age limit, the first reader recomputes it while the others go on reading the one
they have (still within the limit). When there is none, readers wait for one computation
instead of all running it at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

ENTRIES = 256


class _Entry(NamedTuple):
    computed_at: datetime
    version: Hashable
    value: Any
    source_as_of: datetime | None  # what the source was as of when it was computed


class Recent:
    def __init__(self) -> None:
        self._values: dict[Hashable, _Entry] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, key: Hashable) -> threading.Lock:
        """A lock of this process for `key`: one computation at a time, the others wait for it."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def put(self, key: Hashable, value: Any, version: Hashable = None, source_as_of: datetime | None = None) -> None:
        with self._guard:
            self._values.pop(key, None)
            while len(self._values) >= ENTRIES:
                self._values.pop(next(iter(self._values)), None)
            self._values[key] = _Entry(datetime.now(UTC), version, value, source_as_of)

    def _usable(self, key: Hashable, max_age: timedelta) -> _Entry | None:
        found = self._values.get(key)
        return found if found is not None and datetime.now(UTC) - found.computed_at <= max_age else None

    def has(self, key: Hashable, max_age: timedelta) -> bool:
        """Whether a value no older than `max_age` is kept for `key` (whatever its version)."""
        return self._usable(key, max_age) is not None

    def has_young(self, key: Hashable, version: Hashable, max_age: timedelta) -> bool:
        """Whether the value kept for `key` is of `version` and in the first half of `max_age`
        (so that `get` would answer it without computing it again)."""
        return _young(self._values.get(key), version, max_age)

    def young(self, key: Hashable, version: Hashable, max_age: timedelta) -> Any:
        """The value `get` would answer for `key` without computing it again, else None."""
        found = self._values.get(key)
        return found.value if _young(found, version, max_age) else None

    def get(
        self,
        key: Hashable,
        compute: Callable[[], Any],
        max_age: timedelta,
        version: Hashable = None,
        source_as_of: datetime | None = None,
    ) -> tuple[datetime, Any]:
        """(as of, value) for `key`, never older than `max_age`. `source_as_of` is the moment
        the source of `version` was last brought up to date."""

        def answer(entry: _Entry) -> tuple[datetime, Any]:
            source = source_as_of if entry.version == version else entry.source_as_of
            return (min(source, entry.computed_at) if source else entry.computed_at), entry.value

        found = self._usable(key, max_age)
        if _young(found, version, max_age):
            return answer(found)
        lock = self.lock(key)
        if not lock.acquire(blocking=found is None):
            return answer(found)  # someone is recomputing it; this one is still within the limit
        try:
            again = self._usable(key, max_age)
            if _young(again, version, max_age):
                return answer(again)
            value = compute()
            self.put(key, value, version, source_as_of)
            return answer(self._values[key])
        finally:
            lock.release()


def _young(entry: _Entry | None, version: Hashable, max_age: timedelta) -> bool:
    """Of `version` and in the first half of `max_age`: answered as it is."""
    return entry is not None and entry.version == version and datetime.now(UTC) - entry.computed_at <= max_age / 2
