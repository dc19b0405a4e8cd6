"""Pacing per destination: how many messages one destination (a recipient domain, the SMS
gateway, a group robot) may take per window, and the slow-down a destination asks for.

Senders share the counts through Redis, one counter per (destination, window):

    pacer = Pacer(redis, {"email:qq.com": 600, "sms": 600})
    allowed = pacer.reserve({"email:qq.com": 120, "email:example.com": 880})
    # -> {"email:qq.com": 120, "email:example.com": 880}; unlimited ones are not counted
    pacer.give_back({"email:qq.com": 20})           # what the batch did not use after all
    until = pacer.slow_down("email:qq.com")           # a 421 "too many": back off, doubling

A sender asks once per batch, in one round trip, so pacing costs nothing per message; a
destination without a limit and not slowed down costs one MGET per batch. Losing Redis
loses a window's counts and the back-offs, nothing else (the database keeps the messages).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

# How long a destination that said "too many" is left alone: doubling from the first value
# at each further refusal within MAX_BACKOFF_SECONDS, up to it.
BASE_BACKOFF_SECONDS = 30
MAX_BACKOFF_SECONDS = 900

_PREFIX = "portal:pace"


def parse_domain_limits(text: str) -> dict[str, int]:
    """{"qq.com": 600, ...} from the setting's "domain=per minute" pairs (comma or newline
    separated); raises ValueError on a pair that is not one."""
    limits: dict[str, int] = {}
    for part in str(text or "").replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        domain, sep, number = part.partition("=")
        domain = domain.strip().lower()
        if not sep or not domain or "." not in domain or not number.strip().isdigit():
            raise ValueError(part)
        limits[domain] = int(number)
    return limits


def robot_key(webhook_url: str) -> str:
    """The destination of one group robot (its webhook's key, hashed: never stored in Redis)."""
    return "robot:" + hashlib.sha256(webhook_url.encode()).hexdigest()[:16]


def email_key(address: str) -> str:
    return "email:" + address.rsplit("@", 1)[-1].lower()


def limits_from_settings(config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The per-window limits of every paced destination, from the portal's settings."""
    from portal import settings

    limits = {f"email:{domain}": n for domain, n in parse_domain_limits(settings.get("pacing.email_domains")).items()}
    limits["sms"] = int(settings.get("pacing.sms_per_minute"))
    if config is not None and config.get("WECOM_WEBHOOK_URL"):
        limits[robot_key(config["WECOM_WEBHOOK_URL"])] = int(settings.get("pacing.robot_per_minute"))
    return {key: n for key, n in limits.items() if n > 0}


class Pacer:
    """Counts per destination and window in Redis; see the module's docstring."""

    def __init__(
        self,
        redis: Any,
        limits: Mapping[str, int],
        *,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.limits = dict(limits)
        self.window = window
        self.clock = clock

    # -- windows --------------------------------------------------------------------------------
    def _window_number(self) -> int:
        return int(self.clock() // self.window)

    def next_window(self) -> float:
        """When the next window opens (a time.time() value)."""
        return (self._window_number() + 1) * self.window

    def _count_key(self, destination: str, number: int) -> str:
        return f"{_PREFIX}:n:{destination}:{number}"

    # -- counts ---------------------------------------------------------------------------------
    def reserve(self, wanted: Mapping[str, int]) -> dict[str, int]:
        """How many of `wanted` messages per destination may go in this window, reserved at
        once (all senders share the count); destinations without a limit get all."""
        granted = dict(wanted)
        limited = [(key, n) for key, n in wanted.items() if n > 0 and key in self.limits]
        if not limited:
            return granted
        number = self._window_number()
        ttl = max(int(self.window * 2), 2)
        pipe = self.redis.pipeline(transaction=False)
        for key, n in limited:
            pipe.incrby(self._count_key(key, number), n)
            pipe.expire(self._count_key(key, number), ttl)
        used = pipe.execute()[::2]
        excess: dict[str, int] = {}
        for (key, n), total in zip(limited, used, strict=True):
            over = int(total) - self.limits[key]
            if over > 0:
                granted[key] = max(n - over, 0)
                excess[key] = n - granted[key]
        if excess:
            self._decrement(excess, number)
        return granted

    def give_back(self, unused: Mapping[str, int]) -> None:
        """Return what was reserved in this window and not sent (a batch cut short)."""
        self._decrement({k: n for k, n in unused.items() if n > 0 and k in self.limits}, self._window_number())

    def _decrement(self, amounts: Mapping[str, int], number: int) -> None:
        if not amounts:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key, n in amounts.items():
            pipe.decrby(self._count_key(key, number), n)
        pipe.execute()

    # -- slowing down ---------------------------------------------------------------------------
    def slow_down(self, destination: str, base: float = BASE_BACKOFF_SECONDS) -> float:
        """The destination refused for now ("too many"): leave it alone for a back-off that
        doubles with each refusal in a row; returns until when (a time.time() value)."""
        level_key = f"{_PREFIX}:level:{destination}"
        level = int(self.redis.incr(level_key)) - 1
        self.redis.expire(level_key, MAX_BACKOFF_SECONDS * 2)
        seconds = min(base * (2**level), MAX_BACKOFF_SECONDS)
        until = self.clock() + seconds
        self.redis.set(f"{_PREFIX}:until:{destination}", repr(until), px=max(int(seconds * 1000), 1))
        return until

    def slowed(self, destinations: list[str]) -> dict[str, float]:
        """Of `destinations`, those slowed down now, with until when (one MGET)."""
        if not destinations:
            return {}
        values = self.redis.mget([f"{_PREFIX}:until:{d}" for d in destinations])
        now = self.clock()
        found = {}
        for destination, value in zip(destinations, values, strict=True):
            if value is not None and float(value) > now:
                found[destination] = float(value)
        return found

    def recovered(self, destination: str) -> None:
        """The destination accepted again: the next refusal starts from the first back-off."""
        self.redis.delete(f"{_PREFIX}:level:{destination}")
