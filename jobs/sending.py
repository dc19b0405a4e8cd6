"""Sending jobs: the campaign tick, the senders, and test sends.

    run_campaigns      every few seconds (jobs/schedule.py), on a queue of its own so that it
                       never waits behind senders: start due campaigns, move journeys, plan
                       deliveries, release dead senders' leases, and start sender jobs for
                       campaigns with messages due
    send_deliveries    one sender: claims batches of a campaign's due deliveries and sends
                       them until none is due, the campaign stops, its time is up or its
                       worker is stopping

Each running campaign has SENDERS_PER_CAMPAIGN sender slots; see `start_senders` for how a
dead or lost sender is replaced. RQ may still run a job twice (an abandoned job retried):
the ledger's claims make that harmless.
"""

from __future__ import annotations

import gc
import logging
import resource
import time

from flask import current_app

from jobs import shutdown
from jobs.tracking import tracked
from portal.campaigns.models import Campaign, CampaignStatus
from portal.extensions import db
from portal.models_base import utcnow
from portal.queue import SENDING_QUEUE, enqueue, redis_connection

log = logging.getLogger(__name__)


def run_campaigns() -> dict[str, int]:
    """The periodic tick; idempotent and safe to overlap with another tick."""
    from portal.campaigns.monitoring import check_alerts
    from portal.campaigns.runner import in_send_window, run_due

    started = 0

    def planned(campaign_id: int) -> None:
        nonlocal started
        if in_send_window(db.session.get(Campaign, campaign_id), utcnow()):
            started += start_senders(campaign_id)

    sendable = run_due(on_planned=planned)
    for campaign_id in sendable:
        if check_alerts(campaign_id):
            continue
        started += start_senders(campaign_id)
    return {"campaigns": len(sendable), "senders_started": started}


def _sender_key(campaign_id: int, slot: int) -> str:
    return f"portal:sender:{campaign_id}:{slot}"


def start_senders(campaign_id: int) -> int:
    """Make sure SENDERS_PER_CAMPAIGN senders are queued or alive for the campaign.

    A sender keeps a Redis key alive (refreshed every batch, expiring after a lease); a slot
    without a live key gets a new sender. So a killed worker's slot is refilled once its
    lease has expired, and a flushed Redis is refilled at the next tick. A slot may briefly
    have two senders (a slow queue): the ledger's claims keep that harmless."""
    connection = redis_connection()
    ttl = current_app.config["DELIVERY_LEASE_SECONDS"]
    started = 0
    for slot in range(current_app.config["SENDERS_PER_CAMPAIGN"]):
        if not connection.set(_sender_key(campaign_id, slot), "queued", nx=True, ex=ttl):
            continue
        enqueue(
            "jobs.sending.send_deliveries",
            campaign_id,
            slot,
            kind="send",
            queue=SENDING_QUEUE,
            timeout=current_app.config["SENDER_JOB_SECONDS"] + 120,
            track=False,
        )
        started += 1
    return started


def _throttle_allowance(campaign_id: int, per_minute: int, wanted: int) -> tuple[int, str]:
    """How many messages this sender may take now under the campaign's per-minute limit
    (shared by all its senders through a Redis counter per minute; losing it loses nothing
    but a minute's count), and the counter it was taken from: what the claim and the batch
    do not use goes back to it (`_give_back_allowance`)."""
    key = f"portal:throttle:{campaign_id}:{int(time.time() // 60)}"
    connection = redis_connection()
    used = connection.incrby(key, wanted)
    if used == wanted:
        connection.expire(key, 120)
    over = used - per_minute
    if over <= 0:
        return wanted, key
    allowed = max(wanted - over, 0)
    connection.decrby(key, wanted - allowed)
    return allowed, key


def _give_back_allowance(key: str, unused: int) -> None:
    """Return to the minute's counter what was reserved and not sent (a claim that found
    fewer due rows, a batch cut short, paced or skipped messages). A minute that has passed
    takes it back harmlessly: its counter is no longer read."""
    if unused > 0:
        redis_connection().decrby(key, unused)


def send_deliveries(campaign_id: int, slot: int = 0) -> dict[str, float]:
    """Send the campaign's due deliveries batch by batch; returns counts and where the time went.

    Stops when none is due, the campaign stops running (an alert judged on each recorded
    chunk, a person, the send window), its time is up, or the worker is stopping: then the
    chunk in flight is recorded, the rest of the claim given back, the slot freed and a
    replacement queued for another worker (jobs/shutdown.py)."""
    config = current_app.config
    deadline = time.monotonic() + config["SENDER_JOB_SECONDS"]
    # The app, its models and SQLAlchemy's caches are hundreds of thousands of objects that
    # live as long as the process; without this, every full collection of the garbage each
    # message leaves walks them all again (2 to 24 µs a message, measured in a test process).
    gc.freeze()
    try:
        return _send_deliveries(campaign_id, slot, deadline)
    finally:
        gc.unfreeze()  # a job run in the worker's own process leaves its collector as it was


def _send_deliveries(campaign_id: int, slot: int, deadline: float) -> dict[str, float]:
    from portal.delivery.sender import Sender, claim, release_claims

    config = current_app.config
    totals = {"sent": 0, "retry": 0, "bounced": 0, "failed": 0, "skipped": 0, "submitted": 0, "deferred": 0}
    totals["batches"] = 0
    heartbeat = _sender_key(campaign_id, slot)
    connection = redis_connection()
    with Sender(current_app._get_current_object(), should_stop=shutdown.requested) as sender:
        try:
            while time.monotonic() < deadline and not shutdown.requested():
                connection.set(heartbeat, sender.owner, ex=config["DELIVERY_LEASE_SECONDS"])
                if not _still_sending(campaign_id):
                    break
                throttle = db.session.get(Campaign, campaign_id).throttle_per_minute
                allowance, window = _throttle_allowance(campaign_id, throttle, config["DELIVERY_BATCH_SIZE"])
                db.session.commit()
                if allowance == 0:
                    if not _wait_for_allowance(campaign_id, deadline):
                        break
                    continue
                started = time.perf_counter()
                try:
                    batch = claim(campaign_id, sender.owner, allowance, config["DELIVERY_LEASE_SECONDS"])
                finally:
                    sender.timings.database += time.perf_counter() - started
                _give_back_allowance(window, allowance - len(batch))
                if not batch:
                    break
                outcome = sender.send(batch)
                _give_back_allowance(window, outcome.unused)
                totals["batches"] += 1
                for key in ("sent", "retry", "bounced", "failed", "skipped", "submitted", "deferred"):
                    totals[key] += getattr(outcome, key)
                if outcome.paused or outcome.unavailable or outcome.stopped:
                    break
        except shutdown.ShutdownRequested:
            # The grace ran out in the middle of a message: what was not recorded is sent again.
            db.session.rollback()
        finally:
            release_claims(campaign_id, sender.owner)
    connection.delete(heartbeat)
    if shutdown.requested() and _still_sending(campaign_id):
        start_senders(campaign_id)  # the freed slot's replacement, for a worker that stays
    timings = sender.timings.as_dict()
    # This process's peak memory (a forked work horse: its own high-water mark).
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log.info("campaign %s sender: %s timings %s peak %.0f MB", campaign_id, totals, timings, peak_rss_mb)
    return {
        **totals,
        **{f"seconds_{k}": v for k, v in timings.items() if k != "messages"},
        "peak_rss_mb": peak_rss_mb,
    }


def _still_sending(campaign_id: int) -> bool:
    from portal.campaigns.runner import in_send_window

    campaign = db.session.get(Campaign, campaign_id, populate_existing=True)
    return campaign is not None and campaign.status == CampaignStatus.RUNNING and in_send_window(campaign, utcnow())


def _wait_for_allowance(campaign_id: int, deadline: float) -> bool:
    """Wait for the next minute's throttle allowance, checking every second that the campaign
    still sends, that its alerts hold (another sender's results may have crossed a limit) and
    that the worker is not stopping. False when the sender should stop instead."""
    from portal.campaigns.monitoring import check_alerts

    until = min(time.monotonic() + 60 - time.time() % 60 + 0.05, deadline)
    while time.monotonic() < until:
        time.sleep(max(min(1.0, until - time.monotonic()), 0))
        if shutdown.requested() or not _still_sending(campaign_id) or check_alerts(campaign_id):
            db.session.commit()
            return False
        db.session.commit()
    return True


def send_test_messages(test_send_ids: list[int], job_run_id: int | None = None) -> dict[str, int]:
    """Render each test send's step as its contact (or the sample contact), mark it [TEST],
    and send it through the step's real channel: email over one SMTP connection, SMS through
    the gateway, WeCom through the robot. Idempotent: sent rows are skipped."""
    from portal.campaigns.models import TestSend

    outcome = {"sent": 0, "failed": 0}
    from portal.campaigns.publishing import is_test_address

    with tracked(job_run_id) as progress, _TestChannels(current_app.config) as channels:
        rows = [db.session.get(TestSend, i) for i in test_send_ids]
        for number, row in enumerate(rows, start=1):
            if row is None or row.status == "sent":
                continue
            if not is_test_address(row.recipient):
                # COMPANY_EMAIL_DOMAINS / COMPANY_TEST_MOBILES may have been narrowed since the
                # address was added: the worker's configuration is the one that counts.
                row.status, row.message, row.sent_at = "failed", TEST_ADDRESS_REFUSED, None
                outcome["failed"] += 1
                db.session.commit()
                continue
            try:
                subject, result = channels.send(row)
                row.subject = subject[:400]
                row.status = "sent" if result.ok else "failed"
                row.message = "" if result.ok else f"{result.code} {result.detail} {result.message}".strip()[:1000]
            except Exception as exc:
                row.status, row.message = "failed", f"{type(exc).__name__}: {exc}"[:1000]
            row.sent_at = utcnow() if row.status == "sent" else None
            outcome[row.status] += 1
            db.session.commit()
            progress.update(100 * number // max(len(rows), 1), "test_sends", **outcome)
    return outcome


# TestSend.message of a test send refused at send time (labels.TEST_SEND_MESSAGES says it).
TEST_ADDRESS_REFUSED = "not_company_address"


class _TestChannels:
    """The real channels, opened on first use, for one run of test sends."""

    def __init__(self, config) -> None:
        from portal.delivery.mime import DkimSigner, MessageSkeleton

        self.config = config
        self.skeleton = MessageSkeleton(
            config["MAIL_FROM"], extra_headers={"X-Portal-Test": "yes"}, dkim=DkimSigner.from_config(config)
        )
        self.channels: dict[str, object] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        for channel in self.channels.values():
            channel.close()

    def _channel(self, name: str):
        if name not in self.channels:
            if name == "email":
                from portal.delivery.channels.smtp import SmtpSession

                self.channels[name] = SmtpSession.from_url(self.config["SMTP_URL"])
            elif name == "sms":
                from portal.delivery.channels.sms import SmsChannel

                self.channels[name] = SmsChannel.from_config(self.config)
            else:
                from portal.delivery.channels.wecom import WeComRobot

                self.channels[name] = WeComRobot.from_config(self.config)
        return self.channels[name]

    def send(self, row):
        """(what was sent, as a subject line for the history; the channel's result)."""
        from portal.audience.models import Contact
        from portal.content.service import approved_version
        from portal.delivery.mime import make_message_id
        from portal.delivery.render import CONTACT_FIELDS, contact_variables, sample_variables
        from portal.delivery.tokens import tracking_tokens

        content = approved_version(row.content_version_id)
        variables = sample_variables()
        contact = db.session.get(Contact, row.contact_id) if row.contact_id else None
        if contact is not None:
            variables["contact"] = contact_variables({k: getattr(contact, k) for k in CONTACT_FIELDS})
        unsubscribe_url = (
            f"{self.config['PUBLIC_BASE_URL']}/u/{tracking_tokens(current_app).test_unsubscribe_token(row.id)}"
        )
        variables["unsubscribe_url"] = unsubscribe_url
        if content.kind == "sms":
            text = "[TEST] " + content.templates["sms_text"].render(variables)
            return text, self._channel("sms").send(row.recipient, text, message_id=f"test-{row.id}")
        if content.kind == "wecom":
            text = "[TEST] " + content.templates["wecom_text"].render(variables)
            markdown = content.wecom_format == "markdown"
            return text, self._channel("wecom").send(
                text, markdown=markdown, mentioned_mobiles=() if markdown else (row.recipient,)
            )
        subject = "[TEST] " + content.templates["subject"].render(variables)
        domain = self.skeleton.envelope_from.rsplit("@", 1)[1]
        message = self.skeleton.build(
            to_email=row.recipient,
            subject=subject,
            html=content.templates["html_body"].render(variables),
            text=content.templates["text_body"].render(variables),
            message_id=make_message_id(f"test-{row.id}", domain),
            unsubscribe_url=unsubscribe_url,
        )
        return subject, self._channel("email").send(self.skeleton.envelope_from, row.recipient, message)


def post_robot_notices() -> dict[str, int]:
    """Post the internal notices due for the WeCom group robot at its pace (periodic;
    portal/delivery/notices.py). Nothing to do when no robot is configured."""
    from portal.delivery.channels.wecom import WeComRobot
    from portal.delivery.notices import post_robot_notices as post
    from portal.delivery.pacing import Pacer, limits_from_settings

    config = current_app.config
    if not config["WECOM_WEBHOOK_URL"]:
        return {"posted": 0, "failed": 0, "waiting": 0}
    pacer = Pacer(redis_connection(), limits_from_settings(config), window=float(config["PACING_WINDOW_SECONDS"]))
    with WeComRobot.from_config(config) as robot:
        return post(robot, pacer)


def collect_wecom_results() -> dict[str, int]:
    """Read the per-customer results of open WeCom mass-send tasks into the ledger (periodic;
    portal/delivery/wecom_tasks.py). Nothing to do when WeCom customer contact is off."""
    from portal.delivery.channels.wecom_customer import WeComCustomerApi
    from portal.delivery.wecom_tasks import collect_task_results

    config = current_app.config
    if not config["WECOM_CORP_ID"] or not config["WECOM_CONTACT_SECRET"]:
        return {"tasks": 0, "sent": 0, "failed": 0, "closed": 0}
    with WeComCustomerApi.from_config(config, redis=redis_connection()) as api:
        return collect_task_results(api)


# A backlog (the writer was down) is written over several runs: the tick queue it shares with
# the campaign tick is never held for long.
TRACKING_WRITE_SECONDS = 1.5


def write_tracking_events() -> int:
    """Write the opens and clicks the tracking endpoints took into the database (periodic;
    portal/delivery/intake.py); returns how many."""
    from portal.delivery.intake import flush

    return flush(max_seconds=TRACKING_WRITE_SECONDS)
