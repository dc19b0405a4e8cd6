"""The send pipeline under trouble, with real worker processes, a real Redis and a real SMTP
server: a killed worker, an SMTP outage, a flushed Redis, an unsubscribe mid-campaign,
mixed replies in one batch, and two workers with overlapping schedulers.

The campaign tick runs in this process every few tenths of a second (standing in for the
scheduler); sender jobs run in `python -m jobs.worker` processes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from sqlalchemy import func, select

from portal.audience.models import Contact
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from tests import factories
from tests.pipeline import (
    arrivals_stopped,
    campaign_status,
    children,
    emails,
    new_campaign,
    received_by,
    record_test_sends,
    ticking,
    wait_for,
)

# Short leases and retries, so that recovery happens within a test's patience.
FAST = {
    "DELIVERY_LEASE_SECONDS": 3,
    "DELIVERY_RETRY_DELAYS": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "DELIVERY_CHANNEL_BACKOFF_SECONDS": 1,
    "SENDER_JOB_SECONDS": 10,
    "DELIVERY_BATCH_SIZE": 200,
}


@pytest.fixture
def fast_pipeline(app):
    previous = {key: app.config[key] for key in FAST}
    app.config.update(FAST)
    yield {key: str(value) for key, value in FAST.items()}
    app.config.update(previous)


@pytest.fixture
def team(app, app_ctx, make_user):
    return factories.people(make_user)


def _kill_hard(process) -> None:
    """kill -9 the worker and its work horse, as a crashing machine would."""
    for child in children(process.pid):
        os.kill(child, signal.SIGKILL)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_killed_worker_loses_nothing_and_repeats_at_most_what_was_in_flight(
    app, app_ctx, smtp, team, fast_pipeline, start_worker
):
    from portal.delivery.sender import RECORD_EVERY

    campaign_id, ids = new_campaign(team, 10_000)
    worker = start_worker("sending", extra_env=fast_pipeline)
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 3_000, 120, "3,000 messages")
        _kill_hard(worker)
        killed_at = len(smtp.messages)
        start_worker("sending", extra_env=fast_pipeline)
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 240, "the campaign to complete")
    assert killed_at < 10_000  # the kill came in the middle of the send
    received = received_by(smtp)
    assert set(received) == emails(ids)  # none lost
    duplicated = sum(n - 1 for n in received.values())
    # Each sender slot had at most one chunk sent but not yet recorded when it was killed.
    assert duplicated <= 2 * RECORD_EVERY, (duplicated, killed_at)
    counts = dict(
        db.session.execute(
            select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
        ).all()
    )
    assert counts == {DeliveryStatus.SENT: 10_000}


def test_smtp_outage_mid_send_resumes_by_itself(app, app_ctx, team, fast_pipeline, start_worker):
    from aiosmtpd.controller import Controller

    from tests.conftest import RecordingHandler, free_port

    handler = RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    campaign_id, ids = new_campaign(team, 2_000)
    start_worker("sending", extra_env={**fast_pipeline, "SMTP_URL": app.config["SMTP_URL"]})
    try:
        with ticking(app):
            wait_for(lambda: len(handler.messages) >= 500, 60, "500 messages")
            controller.stop()
            down_at = len(handler.messages)
            time.sleep(4)
            controller = Controller(handler, hostname="127.0.0.1", port=port)
            controller.start()
            wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 120, "the campaign to complete")
    finally:
        controller.stop()
    assert down_at < 2_000
    received = received_by(handler)
    assert set(received) == emails(ids)
    assert sum(n - 1 for n in received.values()) <= 2  # at most the message cut off by the outage


def test_flushed_redis_mid_campaign_is_rebuilt_from_the_ledger(app, app_ctx, smtp, team, fast_pipeline, start_worker):
    campaign_id, ids = new_campaign(team, 3_000)
    start_worker("sending", extra_env=fast_pipeline)
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 800, 60, "800 messages")
        app.extensions["redis"].flushall()
        flushed_at = len(smtp.messages)
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 120, "the campaign to complete")
    assert flushed_at < 3_000
    received = received_by(smtp)
    assert set(received) == emails(ids)
    assert all(n == 1 for n in received.values())


def test_two_workers_and_overlapping_schedulers_send_each_message_once(
    app, app_ctx, smtp, team, fast_pipeline, start_worker
):
    from jobs.sending import send_deliveries  # noqa: F401 - the job the extra copies run
    from portal.queue import enqueue

    campaign_id, ids = new_campaign(team, 3_000)
    start_worker("sending", extra_env=fast_pipeline)
    start_worker("sending", extra_env=fast_pipeline)
    with ticking(app, count=2):
        # RQ re-running a sender, or a second scheduler enqueueing one: extra copies per slot.
        for slot in (0, 1, 0, 1):
            enqueue("jobs.sending.send_deliveries", campaign_id, slot, kind="send", queue="sending", track=False)
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 120, "the campaign to complete")
    received = received_by(smtp)
    assert set(received) == emails(ids)
    assert max(received.values()) == 1
    rows = db.session.scalar(select(func.count()).where(Delivery.campaign_id == campaign_id))
    assert rows == 3_000


def test_mixed_replies_in_one_batch_each_get_their_treatment(app, app_ctx, team, fast_pipeline, scripted_smtp):
    from jobs.sending import run_campaigns, send_deliveries

    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{scripted_smtp.port}"
    version = factories.approved_email(team["operations_specialist"], team["reviewer"])
    ids = {}
    for local in ("accepted", "busy", "nouser", "blocked"):
        (ids[local],) = factories.add_contacts(1, prefix=local)
        db.session.get(Contact, ids[local]).email = f"{local}@example.org"
    db.session.commit()
    campaign_id = factories.scheduled_campaign(
        team["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    run_campaigns()
    send_deliveries(campaign_id)

    def state(local):
        db.session.expire_all()
        return db.session.execute(
            select(Delivery.status, Delivery.attempts, Delivery.result_code).where(Delivery.contact_id == ids[local])
        ).one()

    assert state("accepted").status == DeliveryStatus.SENT
    assert state("busy").status == DeliveryStatus.PENDING and state("busy").result_code == 450  # retried later
    assert state("nouser").status == DeliveryStatus.BOUNCED
    assert db.session.get(Contact, ids["nouser"]).suppressed  # hard bounce: never again
    blocked = state("blocked")
    assert blocked.status == DeliveryStatus.PENDING and blocked.attempts == 0  # not the recipient's fault
    campaign = db.session.get(Campaign, campaign_id)
    assert campaign.status == CampaignStatus.PAUSED  # the block list refused us: pause, suppress nobody
    assert "blocked" in campaign.pause_reason
    assert not db.session.get(Contact, ids["blocked"]).suppressed
    assert [m["to"] for m in scripted_smtp.messages] == [["accepted@example.org"]]


def test_busy_mailbox_is_retried_with_backoff_then_counted_as_soft_bounce(
    app, app_ctx, team, fast_pipeline, scripted_smtp
):
    from jobs.sending import run_campaigns, send_deliveries

    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{scripted_smtp.port}"
    app.config["DELIVERY_RETRY_DELAYS"] = "0,0"
    version = factories.approved_email(team["operations_specialist"], team["reviewer"])
    (busy,) = factories.add_contacts(1)
    db.session.get(Contact, busy).email = "busy@example.org"
    db.session.commit()
    campaign_id = factories.scheduled_campaign(
        team["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    run_campaigns()
    for _ in range(4):
        send_deliveries(campaign_id)
    row = db.session.execute(select(Delivery.status, Delivery.reason, Delivery.attempts)).one()
    assert tuple(row) == (DeliveryStatus.FAILED, "soft_bounce", 3)


def test_recipient_who_unsubscribes_mid_campaign_gets_nothing_more(app, app_ctx, smtp, team, client):
    import email as email_lib
    from datetime import timedelta

    from sqlalchemy import update

    from jobs.sending import send_deliveries
    from portal.campaigns.runner import run_due
    from portal.delivery.sender import Sender, claim
    from portal.delivery.tokens import tracking_tokens
    from portal.models_base import utcnow

    version = factories.approved_email(team["operations_specialist"], team["reviewer"])
    message = {"kind": "message", "channel": "email", "content_version_id": version}
    campaign_id, _ids = new_campaign(team, 20, steps=[message, {"kind": "delay", "config": {"hours": 1}}, message])
    now = utcnow()
    run_due(now)
    with Sender(app) as sender:  # the first five go out
        sender.send(claim(campaign_id, sender.owner, 5, 60))
    # One who got the first message unsubscribes with its one-click link ...
    after_first = smtp.messages[0]["to"][0]
    link = email_lib.message_from_bytes(smtp.messages[0]["data"])["List-Unsubscribe"].strip("<>")
    assert client.post(link.split(":5000", 1)[-1], data={"List-Unsubscribe": "One-Click"}).status_code == 200
    # ... and one whose first message is still waiting unsubscribes too.
    waiting = db.session.scalar(
        select(Delivery).where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.PENDING).limit(1)
    )
    before_any = db.session.get(Contact, waiting.contact_id).email
    token = tracking_tokens(app).unsubscribe_token(waiting.id, waiting.contact_id)
    assert client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200

    send_deliveries(campaign_id)
    run_due(now + timedelta(hours=1, minutes=1))
    # An hour later: the second message's deliveries are due now.
    db.session.execute(update(Delivery).where(Delivery.status == DeliveryStatus.PENDING).values(due_at=utcnow()))
    db.session.commit()
    send_deliveries(campaign_id)

    received = received_by(smtp)
    assert received[after_first] == 1
    assert received[before_any] == 0
    others = {address: n for address, n in received.items() if address not in (after_first, before_any)}
    assert len(others) == 18 and set(others.values()) == {2}


def test_pause_stops_sending_within_seconds_and_resume_finishes_the_rest(
    app, app_ctx, smtp, team, fast_pipeline, start_worker
):
    from portal.campaigns import publishing

    campaign_id, ids = new_campaign(team, 4_000, throttle=60_000)
    start_worker("sending", extra_env=fast_pipeline)
    manager = team["marketing_manager"]
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 300, 60, "300 messages")
        publishing.change_status(manager, campaign_id, "pause")
        paused_at = time.monotonic()
        wait_for(lambda: arrivals_stopped(smtp), 10, "sending to stop")
        stopped_after = time.monotonic() - paused_at
        held = len(smtp.messages)
        time.sleep(2)
        assert len(smtp.messages) == held < 4_000  # nothing more while paused
        record_test_sends(campaign_id)
        publishing.resume(manager, campaign_id, acknowledged=False)  # through the publish gate again
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 120, "the campaign to complete")
    assert stopped_after < 5
    received = received_by(smtp)
    assert set(received) == emails(ids) and max(received.values()) == 1


def test_cancel_stops_sending_and_cancels_what_is_left(app, app_ctx, smtp, team, fast_pipeline, start_worker):
    from portal.campaigns import publishing

    campaign_id, _ids = new_campaign(team, 4_000)
    start_worker("sending", extra_env=fast_pipeline)
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 300, 60, "300 messages")
        publishing.change_status(team["marketing_manager"], campaign_id, "cancel")
        wait_for(lambda: arrivals_stopped(smtp), 10, "sending to stop")
    db.session.expire_all()
    counts = dict(
        db.session.execute(
            select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
        ).all()
    )
    assert counts[DeliveryStatus.SENT] == len(smtp.messages) < 4_000
    assert counts[DeliveryStatus.CANCELLED] + counts[DeliveryStatus.SENT] == 4_000


def test_a_message_built_ahead_never_goes_out_after_an_answer_that_pauses(
    app, app_ctx, team, fast_pipeline, scripted_smtp
):
    # The sender builds the next email while the server takes one in; a refusal of that
    # content which pauses the campaign must leave every later message unsent, the one
    # already built ahead too.
    from jobs.sending import run_campaigns, send_deliveries
    from portal.delivery.models import DeliveryAttempt

    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{scripted_smtp.port}"
    version = factories.approved_email(team["operations_specialist"], team["reviewer"])
    factories.add_contacts(1, prefix="first")
    (spam,) = factories.add_contacts(1, prefix="spam")
    db.session.get(Contact, spam).email = "spam@example.org"  # refused after its content
    factories.add_contacts(5, prefix="later")
    db.session.commit()
    campaign_id = factories.scheduled_campaign(
        team["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    run_campaigns()
    send_deliveries(campaign_id)

    db.session.expire_all()
    assert db.session.get(Campaign, campaign_id).status == CampaignStatus.PAUSED
    sent = set(
        db.session.scalars(
            select(Contact.email)
            .join(Delivery, Delivery.contact_id == Contact.id)
            .where(Delivery.status == DeliveryStatus.SENT)
        )
    )
    received = {address for message in scripted_smtp.messages for address in message["to"]}
    assert received == sent  # nothing reached the server that the ledger does not hold as sent
    tried = db.session.scalar(select(func.count()).select_from(DeliveryAttempt))
    assert tried == len(sent) + 1  # the sent ones and the refused one, no other attempt
    assert db.session.scalar(select(func.count()).where(Delivery.status == DeliveryStatus.PENDING)) == 7 - len(sent)
