"""What every channel answers for one recipient, and the retry schedule.

The sender (the ledger's batch job) turns an `Outcome` into ledger state:

    ACCEPTED     delivered to the next hop; record as sent.
    RETRY        temporary (4xx, HTTP 429/5xx, rate limited, connection trouble): try again
                 after `retry_delay(attempts_so_far)`; when that is None, give up as a soft
                 bounce.
    HARD_BOUNCE  the address does not exist (SMTP 5.1.x): record the bounce and suppress
                 the address.
    PAUSE        the receiving side refuses *us* (sender, policy, block list: 5.7.x, 554
                 "blocked"): pause the campaign, suppress nobody.
    FAILED       refused for good for this one message, but not because of the address
                 (message too big, malformed request): record as failed, suppress nobody.

`affects_batch` is True when the failure is the connection's, not the recipient's: the
sender should stop the batch and retry every unsent delivery of it later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    HARD_BOUNCE = "hard_bounce"
    PAUSE = "pause"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    # The server's status: the SMTP reply code, or the HTTP status for HTTP channels.
    code: int = 0
    # The enhanced status code ("5.1.1") when the server gave one, or a provider's error code.
    detail: str = ""
    message: str = ""
    affects_batch: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


ACCEPTED = SendResult(Outcome.ACCEPTED, 250)

# How long to wait before the next attempt after the 1st, 2nd, 3rd, 4th temporary failure.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
)


def retry_delay(failed_attempts: int) -> timedelta | None:
    """The wait before the next attempt after `failed_attempts` temporary failures
    (1 = the first attempt failed); None once the schedule is used up (a soft bounce)."""
    if failed_attempts < 1 or failed_attempts > len(RETRY_DELAYS):
        return None
    return RETRY_DELAYS[failed_attempts - 1]


class ChannelUnavailable(Exception):
    """The channel cannot be reached at all (connection refused, timeout, TLS or login
    failure): every delivery of the batch is temporary."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.message)
        self.result = result
