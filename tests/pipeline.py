"""What the tests of the send pipeline share: a campaign on a fresh audience, the campaign
tick run in this process (standing in for the scheduler), and waiting for what workers do."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select

from portal.audience.models import Contact
from portal.campaigns.models import Campaign
from portal.extensions import db
from tests import factories


def new_campaign(team, contacts: int, steps: list[dict] | None = None, **fields) -> tuple[int, list[int]]:
    version = factories.approved_email(team["operations_specialist"], team["reviewer"])
    ids = factories.add_contacts(contacts)
    steps = steps or [{"kind": "message", "channel": "email", "content_version_id": version}]
    return factories.scheduled_campaign(team["marketing_manager"], factories.segment_of(), steps, **fields), ids


class Ticker(threading.Thread):
    """Runs the campaign tick every `interval` seconds in its own app context."""

    def __init__(self, app, interval: float = 0.3) -> None:
        super().__init__(daemon=True)
        self.app, self.interval = app, interval
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        from jobs.sending import run_campaigns

        with self.app.app_context():
            while not self.stopping.is_set():
                try:
                    run_campaigns()
                except Exception as exc:  # a locked SQLite or a flushed Redis: the next tick retries
                    db.session.rollback()
                    self.errors.append(exc)
                finally:
                    db.session.remove()
                self.stopping.wait(self.interval)


@contextmanager
def ticking(app, count: int = 1) -> Iterator[list[Ticker]]:
    tickers = [Ticker(app) for _ in range(count)]
    for ticker in tickers:
        ticker.start()
    try:
        yield tickers
    finally:
        for ticker in tickers:
            ticker.stopping.set()
        for ticker in tickers:
            ticker.join(timeout=30)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def campaign_status(campaign_id: int) -> str:
    db.session.expire_all()
    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    db.session.commit()
    return status


def received_by(smtp) -> collections.Counter:
    return collections.Counter(m["to"][0] for m in list(smtp.messages))


def emails(ids: list[int]) -> set[str]:
    return set(db.session.scalars(select(Contact.email).where(Contact.id.in_(ids))))


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def arrivals_stopped(smtp, quiet: float = 1.0) -> bool:
    """True once no message has arrived for `quiet` seconds."""
    before = len(smtp.messages)
    time.sleep(quiet)
    return len(smtp.messages) == before


def record_test_sends(campaign_id: int) -> None:
    """As if every message step had just been test-sent successfully (the gate's condition)."""
    from portal.campaigns.models import TestSend

    campaign = db.session.get(Campaign, campaign_id)
    for step in campaign.steps:
        if step.kind == "message":
            db.session.add(
                TestSend(
                    campaign_id=campaign_id,
                    step_id=step.id,
                    content_version_id=step.content_version_id,
                    status="sent",
                    recipient="wang@example.com",
                )
            )
    db.session.commit()
