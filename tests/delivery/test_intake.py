"""The tracking intake: opens and clicks taken by Redis, written to the database in batches,
each exactly once, whatever fails in between."""

from __future__ import annotations

import threading

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import delete, func, select

from portal.audience.models import Contact, ContactEvent
from portal.campaigns.models import CampaignStep
from portal.delivery import intake
from portal.delivery.models import Delivery, TrackingIntakeMark
from portal.delivery.tokens import Recipient
from portal.extensions import db
from portal.models_base import utcnow
from tests.factories import add_contacts, approved_email, people, scheduled_campaign, segment_of


@pytest.fixture
def sent(app_ctx, make_user):
    """Three contacts, each with a sent email: their Recipients."""
    staff = people(make_user)
    version_id = approved_email(staff["operations_specialist"], staff["reviewer"], subject="双十二预告")
    contact_ids = add_contacts(3)
    campaign_id = scheduled_campaign(
        staff["marketing_manager"],
        segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version_id}],
    )
    step_id = db.session.scalar(select(CampaignStep.id).where(CampaignStep.campaign_id == campaign_id))
    deliveries = [
        Delivery(
            campaign_id=campaign_id,
            step_id=step_id,
            contact_id=contact_id,
            channel="email",
            content_version_id=version_id,
            status="sent",
            sent_at=utcnow(),
        )
        for contact_id in contact_ids
    ]
    db.session.add_all(deliveries)
    db.session.commit()
    return [Recipient(d.id, d.contact_id) for d in deliveries]


def _events() -> list[tuple[int, str]]:
    rows = db.session.execute(select(ContactEvent.contact_id, ContactEvent.kind).order_by(ContactEvent.id)).all()
    db.session.rollback()
    return [tuple(row) for row in rows]


def _delivery(recipient: Recipient) -> Delivery:
    db.session.expire_all()
    return db.session.get(Delivery, recipient.delivery_id)


def test_taken_events_reach_the_database_only_when_written(sent):
    a, b, _ = sent
    assert intake.append("email_open", a)
    assert intake.append("email_click", b, "https://www.example.com/双十二")
    assert intake.append("email_open", a)
    assert _events() == [] and intake.backlog()[0] == 3

    assert intake.flush() == 3
    assert _events() == [(a.contact_id, "email_open"), (b.contact_id, "email_click"), (a.contact_id, "email_open")]
    click = db.session.scalar(select(ContactEvent).where(ContactEvent.kind == "email_click"))
    assert click.properties == {"delivery_id": b.delivery_id, "url": "https://www.example.com/双十二"}
    assert click.source == "tracking"
    # First times on the ledger: a click is an open as well; the first open stays the first.
    first_open = _delivery(a).opened_at
    assert first_open is not None and _delivery(a).clicked_at is None
    assert _delivery(b).opened_at == _delivery(b).clicked_at is not None
    assert intake.backlog() == (0, None) and intake.flush() == 0

    assert intake.append("email_click", a, "https://www.example.com/")
    assert intake.flush() == 1
    assert _delivery(a).opened_at == first_open and _delivery(a).clicked_at > first_open


def test_later_opens_and_clicks_leave_the_first_times_as_they_are(sent):
    a, b, c = sent
    intake.append("email_click", a, "https://www.example.com/")
    intake.append("email_open", b)
    assert intake.flush() == 2
    first = {r: (_delivery(r).opened_at, _delivery(r).clicked_at) for r in (a, b)}
    intake.append("email_open", a)
    intake.append("email_click", a, "https://www.example.com/")
    intake.append("email_open", b)
    intake.append("email_open", c)
    intake.append("email_click", c, "https://www.example.com/")
    assert intake.flush() == 5
    assert {r: (_delivery(r).opened_at, _delivery(r).clicked_at) for r in (a, b)} == first
    # In one batch the open came first: the click is later, and both are set.
    assert _delivery(c).opened_at <= _delivery(c).clicked_at


def test_an_erased_contacts_opens_are_dropped_and_the_rest_written(sent):
    a, b, _ = sent
    intake.append("email_open", a)
    intake.append("email_open", b)
    db.session.execute(delete(Contact).where(Contact.id == a.contact_id))
    db.session.commit()
    assert intake.flush() == 2
    assert _events() == [(b.contact_id, "email_open")]


def test_a_flush_that_dies_after_its_commit_writes_nothing_twice(app, sent, monkeypatch):
    """The crash between the database commit and trimming the stream: the entries are still
    in Redis, but the mark moved with the events, so the next flush skips them."""
    a, b, c = sent
    for recipient in sent:
        intake.append("email_open", recipient)

    def lost_connection(self):
        raise RedisConnectionError("connection lost")

    with monkeypatch.context() as patch:
        patch.setattr("redis.client.Pipeline.execute", lost_connection)
        with pytest.raises(RedisConnectionError):
            intake.flush()
    assert len(_events()) == 3
    assert len(app.extensions["redis"].xrange(intake.STREAM)) == 3  # still there, never trimmed

    assert intake.flush() == 0
    assert intake.append("email_click", a, "https://www.example.com/")
    assert intake.flush() == 1
    opens = [(recipient.contact_id, "email_open") for recipient in (a, b, c)]
    assert sorted(_events()) == sorted([*opens, (a.contact_id, "email_click")])
    # The second flush trimmed what the first had written.
    assert len(app.extensions["redis"].xrange(intake.STREAM)) == 0


def test_flushes_at_the_same_time_write_every_entry_once(app, sent):
    for n in range(3000):
        intake.append("email_open" if n % 3 else "email_click", sent[n % 3], "https://www.example.com/")
    db.session.remove()
    errors = []

    def flush():
        try:
            with app.app_context():
                while intake.backlog()[0]:
                    intake.flush(max_entries=700)
                db.session.remove()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=flush) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert db.session.scalar(select(func.count()).select_from(ContactEvent)) == 3000
    assert db.session.scalar(select(func.count()).where(ContactEvent.kind == "email_click")) == 1000
    mark = db.session.scalar(select(TrackingIntakeMark.last_entry))
    assert mark == app.extensions["redis"].xinfo_stream(intake.STREAM)["last-generated-id"].decode()


def test_endpoint_events_are_counted_by_the_next_rollup_refresh(client, sent, tokens):
    """The dashboard's figures say "as of" their refresh: opens answered before it are in them."""
    from portal.reports import rollups
    from portal.reports.models import ReportRollup

    a, b, _ = sent
    rollups.refresh()
    assert client.get(f"/t/o/{tokens.open_token(*a)}.gif").status_code == 200
    assert client.get(f"/t/o/{tokens.open_token(*b)}.gif").status_code == 200
    rollups.refresh()
    opened = db.session.scalar(select(func.sum(ReportRollup.opens)).where(ReportRollup.dimension == ""))
    assert opened == 2


def test_a_backlog_is_written_over_several_runs_of_the_job(sent, monkeypatch):
    """The periodic job shares the tick queue with the campaign tick: a run stops starting
    batches after its time, and the next run goes on from the mark."""
    from jobs import sending

    for recipient in sent:
        intake.append("email_open", recipient)
    monkeypatch.setattr(intake, "BATCH", 1)
    monkeypatch.setattr(sending, "TRACKING_WRITE_SECONDS", 0)
    assert [sending.write_tracking_events() for _ in range(4)] == [1, 1, 1, 0]
    assert sorted(_events()) == sorted((r.contact_id, "email_open") for r in sent)


def test_entries_taken_while_a_flush_writes_wait_for_the_next_one(sent, monkeypatch):
    """A flush writes what the stream held when it began, in full batches, and leaves what
    arrives meanwhile to the next run instead of chasing it a few entries at a time."""
    a, b, c = sent
    intake.append("email_open", a)
    intake.append("email_open", b)
    monkeypatch.setattr(intake, "BATCH", 1)
    write = intake._write

    def write_while_an_open_arrives(entries):
        intake.append("email_open", c)
        write(entries)

    monkeypatch.setattr(intake, "_write", write_while_an_open_arrives)
    assert intake.flush() == 2
    assert sorted(_events()) == sorted([(a.contact_id, "email_open"), (b.contact_id, "email_open")])
    assert intake.backlog()[0] == 2  # the two opens taken during the writes
    monkeypatch.setattr(intake, "_write", write)
    assert intake.flush() == 2 and intake.flush() == 0
    assert sorted(_events()).count((c.contact_id, "email_open")) == 2
