"""Stopping a job cleanly when its worker is asked to stop (a deploy, a scale-down).

SIGTERM may reach the work horse from its worker (which passes its own SIGTERM on), or
directly (systemd's default KillMode=control-group signals every process of the unit). RQ's
horse would die at once on it; `install` makes it set a flag instead, which the jobs read:

- a sender finishes the chunk in flight, records it, gives back the rest of its claim and
  its sender slot, and returns (well within a second at the measured send rates);
- a job reporting progress through `jobs.tracking` stops at its next progress update: its
  work is rolled back, it is queued again (resumed on another worker) and its JobRun says so;
- a job that does neither within STOP_GRACE_SECONDS is interrupted the same way, so that the
  worker is gone well within the stop timeout the deployment files give it (WORKER_STOP_SECONDS).
"""

from __future__ import annotations

import os
import signal
import threading

# How long a job may go on after the stop request before it is interrupted, and the time the
# whole worker promises to be gone in (deploy/ gives the process manager a little more).
STOP_GRACE_SECONDS = 15
WORKER_STOP_SECONDS = 20

_requested = False


class ShutdownRequested(Exception):
    """Raised inside a job that must make room for a worker's stop."""


def requested() -> bool:
    """True once this process has been asked to stop."""
    return _requested


def checkpoint() -> None:
    """Raise ShutdownRequested when the process has been asked to stop: long jobs call it
    (through their progress updates) at the points where stopping loses nothing."""
    if requested():
        raise ShutdownRequested


def _on_sigterm(signum, frame) -> None:
    global _requested
    if _requested:
        return
    _requested = True
    # The backstop: a job that never reaches a checkpoint is interrupted after the grace.
    timer = threading.Timer(STOP_GRACE_SECONDS, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.daemon = True
    timer.start()


def _on_grace_over(signum, frame) -> None:
    raise ShutdownRequested


def install() -> None:
    """In a work horse: SIGTERM asks the job to stop instead of killing the process."""
    global _requested
    _requested = False
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR1, _on_grace_over)
