"""Senders: claim due deliveries with a lease, send them over one reused connection per
channel, record the results in bulk.

    with Sender(app, owner="host:pid:job") as sender:
        while (batch := claim(campaign_id, sender.owner, 500, lease_seconds)):
            sender.send(batch)

Crash safety: a claimed row is `sending` with a lease. Results are written every
`RECORD_EVERY` messages, so a killed worker leaves at most that many messages sent but
unrecorded; when the lease expires, `release_expired_leases` makes the rest of its claim
`pending` again and another sender takes it. The ledger, not RQ, prevents a second send:
a row is claimed by one sender at a time, and a sent row is never claimed again.

Each recorded chunk also adds to the campaign's alert counts in the same transaction, and the
alerts are judged on them there and then (portal/campaigns/monitoring.py): a limit crossed
pauses the campaign before the next chunk goes out. A sender asked to stop (`should_stop`,
a worker's restart) records the chunk in flight and gives the rest of its claim back at once.

Per-message work is only what must differ: the template of a (step, version) is compiled
once, the MIME skeleton and the link tracker are made once, and each recipient gets the
rendering of their variables, their tracked links and their headers.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from sqlalchemy import select, text, update

from portal.audience.models import ConsentStatus, Contact, ContactConsent, ContactEvent, EventKind
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery.channels.base import ChannelUnavailable, Outcome, SendResult
from portal.delivery.mime import make_message_id
from portal.delivery.models import Delivery, DeliveryStatus, ExclusionReason
from portal.delivery.render import CONTACT_FIELDS, contact_variables
from portal.delivery.tokens import LinkTracker, tracking_tokens
from portal.extensions import db
from portal.models_base import utcnow

log = logging.getLogger(__name__)

# Results are committed after this many messages: the most a killed worker can leave sent
# but unrecorded (and so send again after its lease expires). Each commit costs a round
# trip, a status check and index work, so fewer, larger chunks send faster; 200 is a tenth
# of a second of one sender's work, which bounds the repeats of a crash.
RECORD_EVERY = 200
# Until the campaign has the settled messages the alerts need (alerts.min_attempts), chunks
# are smaller, so that the first judgement comes soon after that number and a bad list pauses
# after a few more messages in flight rather than after a whole chunk per sender.
EARLY_RECORD_EVERY = 25


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    campaign_id: int
    contact_id: int
    step_id: int
    channel: str
    content_version_id: int
    attempts: int


def claim(campaign_id: int, owner: str, limit: int, lease_seconds: int, now: datetime | None = None) -> list[Claimed]:
    """Lease up to `limit` due pending deliveries of the campaign to `owner`, committed.
    Concurrent claimers never get the same row (SKIP LOCKED on PostgreSQL; SQLite runs one
    writer at a time)."""
    now = now or utcnow()
    due = (
        select(Delivery.id)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.due_at <= now,
        )
        # Due order straight from the (campaign_id, status, due_at) index: a tie-breaker on
        # id would make PostgreSQL sort every pending row of the campaign at each claim.
        .order_by(Delivery.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        # Materialised, so that it runs once: as a plain IN (subquery) PostgreSQL may re-run
        # the LIMIT for every row and claim far more than `limit`.
        .cte("due")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )
    rows = db.session.execute(
        update(Delivery)
        .where(Delivery.id == due.c.id, Delivery.status == DeliveryStatus.PENDING)
        .values(
            status=DeliveryStatus.SENDING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Delivery.attempts + 1,
        )
        .returning(
            Delivery.id,
            Delivery.campaign_id,
            Delivery.contact_id,
            Delivery.step_id,
            Delivery.channel,
            Delivery.content_version_id,
            Delivery.attempts,
        )
        .execution_options(synchronize_session=False)
    ).all()
    db.session.commit()
    return sorted((Claimed(*row) for row in rows), key=lambda c: (c.step_id, c.content_version_id, c.id))


def release_expired_leases(now: datetime | None = None) -> int:
    """Make deliveries whose sender died (lease expired) pending again; returns how many."""
    now = now or utcnow()
    released = db.session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.lease_expires_at < now)
        .values(status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None, due_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return released


def release_claims(campaign_id: int, owner: str) -> int:
    """Give back at once what `owner` still holds of the campaign (a sender interrupted before
    it could record and release its batch), without counting the attempt; returns how many."""
    released = db.session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.lease_owner == owner,
        )
        .values(
            status=DeliveryStatus.PENDING,
            attempts=Delivery.attempts - 1,
            lease_owner=None,
            lease_expires_at=None,
            due_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return released


def retry_delays(config: Any) -> list[int]:
    """Seconds to wait after the 1st, 2nd, ... temporary failure (config DELIVERY_RETRY_DELAYS)."""
    return [int(part) for part in str(config["DELIVERY_RETRY_DELAYS"]).split(",") if part.strip()]


@dataclass
class Timings:
    """Where a sender's time went, in seconds, and how many messages it handled."""

    render: float = 0.0
    mime: float = 0.0
    channel: float = 0.0
    database: float = 0.0
    messages: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class _Material:
    """What every message of one (step, content version) shares, prepared once."""

    content: Any
    campaign_name: str
    tracker: LinkTracker | None = None
    skeleton: Any = None
    # The HTML template with its links already tracked (see LinkTracker.prepare), and
    # whether template-built links remain to be rewritten after rendering.
    html: Any = None
    dynamic_links: bool = False


@dataclass
class BatchOutcome:
    sent: int = 0
    retry: int = 0
    bounced: int = 0
    failed: int = 0
    skipped: int = 0
    # Set when the receiving side refused us: the campaign has been paused with this reason.
    paused: str = ""
    # Set when the channel could not be reached: the rest of the batch waits for a retry.
    unavailable: str = ""
    # Set when the sender was asked to stop: the rest of the batch was given back.
    stopped: bool = False


class Sender:
    """Sends claimed deliveries; one per sender job. Channels are opened on first use and
    reused for every message until `close`."""

    def __init__(self, app: Any, owner: str | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        from portal.campaigns.monitoring import AlertLimits

        self.app = app
        self.config = app.config
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{time.monotonic_ns()}"
        self.tokens = tracking_tokens(app)
        self.timings = Timings()
        self._materials: dict[tuple[int, int], _Material] = {}
        self._channels: dict[str, Any] = {}
        self._retry_delays = retry_delays(self.config)
        self._backoff = int(self.config["DELIVERY_CHANNEL_BACKOFF_SECONDS"])
        from_name, from_address = parseaddr(self.config["MAIL_FROM"])
        self._from_name = from_name
        self._domain = from_address.rsplit("@", 1)[-1]
        self._should_stop = should_stop or (lambda: False)
        self._alert_limits = AlertLimits.from_settings()
        # Small chunks until the campaign's counts say the alerts have enough to judge.
        self._chunk = EARLY_RECORD_EVERY if self._alert_limits else RECORD_EVERY

    # -- channels -----------------------------------------------------------------------------
    def _channel(self, name: str) -> Any:
        channel = self._channels.get(name)
        if channel is None:
            if name == "email":
                from portal.delivery.channels.smtp import SmtpSession

                channel = SmtpSession.from_url(self.config["SMTP_URL"])
                channel.open()  # ChannelUnavailable when the server cannot be reached
            elif name == "sms":
                from portal.delivery.channels.sms import SmsChannel

                channel = SmsChannel.from_config(self.config)
            elif name == "wecom":
                from portal.delivery.channels.wecom import WeComRobot

                channel = WeComRobot.from_config(self.config)
            else:
                raise ValueError(f"unknown channel {name!r}")
            self._channels[name] = channel
        return channel

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- materials ----------------------------------------------------------------------------
    def _material(self, delivery: Claimed) -> _Material:
        key = (delivery.step_id, delivery.content_version_id)
        material = self._materials.get(key)
        if material is None:
            from portal.content.service import approved_version
            from portal.delivery.mime import DkimSigner, MessageSkeleton

            content = approved_version(delivery.content_version_id)
            campaign_name = db.session.scalar(
                select(Campaign.name)
                .join(Delivery, Delivery.campaign_id == Campaign.id)
                .where(Delivery.id == delivery.id)
            )
            material = _Material(content=content, campaign_name=campaign_name or "")
            if delivery.channel == "email":
                from portal.delivery.render import compile_template

                tracker = LinkTracker(self.tokens, self.config["PUBLIC_BASE_URL"])
                prepared, material.dynamic_links = tracker.prepare(content.html_body)
                material.html = compile_template(prepared, html=True)
                material.tracker = tracker
                material.skeleton = MessageSkeleton(self.config["MAIL_FROM"], dkim=DkimSigner.from_config(self.config))
            self._materials[key] = material
        return material

    # -- sending ------------------------------------------------------------------------------
    def send(self, batch: list[Claimed]) -> BatchOutcome:
        """Send every claimed delivery of `batch` and record each result; stops early (the
        rest made pending again) when the campaign stops running or a channel is unavailable."""
        outcome = BatchOutcome()
        started = time.perf_counter()
        contacts = self._contacts(batch)
        self.timings.database += time.perf_counter() - started
        results: list[tuple[Claimed, SendResult | str]] = []
        for number, delivery in enumerate(batch):
            if len(results) >= self._chunk:
                status = self._record(results, outcome)
                results = []
                if status != CampaignStatus.RUNNING:
                    # Paused: the rest waits for the resume. Cancelled: the rest never goes.
                    cancelled = status == CampaignStatus.CANCELLED
                    self._release(batch[number:], due_in=0, cancelled=cancelled)
                    return outcome
                if self._should_stop():
                    self._release(batch[number:], due_in=0)
                    outcome.stopped = True
                    return outcome
            contact = contacts.get(delivery.contact_id)
            reason = self._skip_reason(delivery, contact)
            if reason:
                results.append((delivery, reason))
                continue
            try:
                result = self._send_one(delivery, contact)  # type: ignore[arg-type]
            except ChannelUnavailable as unavailable:
                result = unavailable.result
            results.append((delivery, result))
            if result.outcome is Outcome.HARD_BOUNCE:
                contact["suppressed"] = True  # type: ignore[index] # nothing more for them in this batch
            if result.outcome is Outcome.PAUSE or result.affects_batch:
                self._record(results, outcome)
                rest = batch[number + 1 :]
                if result.outcome is Outcome.PAUSE:
                    self._release(rest, due_in=0)
                else:
                    outcome.unavailable = result.message or f"channel {delivery.channel} unavailable"
                    self._release(rest, due_in=self._backoff)
                channel = self._channels.pop(delivery.channel, None)
                if channel is not None:
                    channel.close()  # a refused or broken connection is not reused
                return outcome
        self._record(results, outcome)
        return outcome

    def _contacts(self, batch: list[Claimed]) -> dict[int, dict[str, Any]]:
        ids = list({d.contact_id for d in batch})
        columns = [getattr(Contact, name) for name in CONTACT_FIELDS]
        rows = db.session.execute(
            select(Contact.id, Contact.unsubscribed, Contact.suppressed, *columns).where(Contact.id.in_(ids))
        ).all()
        contacts = {row.id: row._asdict() for row in rows}
        consents = db.session.execute(
            select(ContactConsent.contact_id, ContactConsent.channel).where(
                ContactConsent.contact_id.in_(ids), ContactConsent.status == ConsentStatus.GRANTED
            )
        ).all()
        for contact_id, channel in consents:
            contacts[contact_id].setdefault("consents", set()).add(channel)
        return contacts

    @staticmethod
    def _skip_reason(delivery: Claimed, contact: dict[str, Any] | None) -> str:
        """Checked again at sending time: someone may have unsubscribed since planning."""
        if contact is None or contact["suppressed"]:
            return ExclusionReason.SUPPRESSED
        if contact["unsubscribed"]:
            return ExclusionReason.UNSUBSCRIBED
        if delivery.channel not in contact.get("consents", ()):
            return ExclusionReason.NO_CONSENT
        if not contact["email" if delivery.channel == "email" else "mobile"]:
            return ExclusionReason.NO_ADDRESS
        return ""

    def _send_one(self, delivery: Claimed, contact: dict[str, Any]) -> SendResult:
        t0 = time.perf_counter()
        material = self._material(delivery)
        templates = material.content.templates
        variables = {
            "contact": contact_variables(contact),
            "campaign": {"name": material.campaign_name},
            "sender": {"company": self._from_name},
            "view_in_browser_url": "",
        }
        try:
            if delivery.channel == "email":
                tracker: LinkTracker = material.tracker  # type: ignore[assignment]
                unsubscribe_url = tracker.unsubscribe_url(delivery.id, delivery.contact_id)
                variables["unsubscribe_url"] = unsubscribe_url
                subject = templates["subject"].render(variables)
                text = templates["text_body"].render(variables)
                html = tracker.fill(material.html.render(variables), delivery.id, delivery.contact_id)
                if material.dynamic_links:
                    html = tracker.rewrite(html, delivery.id, delivery.contact_id, unsubscribe_url=unsubscribe_url)
                else:
                    html = tracker.add_pixel(html, delivery.id, delivery.contact_id)
                t1 = time.perf_counter()
                message = material.skeleton.build(
                    to_email=contact["email"],
                    to_name=contact.get("name") or "",
                    subject=subject,
                    html=html,
                    text=text or None,
                    message_id=make_message_id(delivery.id, self._domain),
                    unsubscribe_url=unsubscribe_url,
                    unsubscribe_mailto=self._mailto(delivery),
                )
                t2 = time.perf_counter()
                result = self._channel("email").send(material.skeleton.envelope_from, contact["email"], message)
            elif delivery.channel == "sms":
                variables["unsubscribe_url"] = ""
                body = templates["sms_text"].render(variables)
                t1 = t2 = time.perf_counter()
                result = self._channel("sms").send(contact["mobile"], body, message_id=f"d{delivery.id}")
            else:
                variables["unsubscribe_url"] = ""
                body = templates["wecom_text"].render(variables)
                t1 = t2 = time.perf_counter()
                result = self._channel("wecom").send(
                    body,
                    markdown=material.content.wecom_format == "markdown",
                    mentioned_mobiles=(contact["mobile"],),
                )
        except ChannelUnavailable:
            raise
        except Exception as exc:  # a template or a value that cannot be sent: this message only
            log.warning("delivery %s not sendable: %s", delivery.id, exc)
            return SendResult(Outcome.FAILED, 0, "unsendable", f"{type(exc).__name__}: {exc}"[:500])
        t3 = time.perf_counter()
        self.timings.render += t1 - t0
        self.timings.mime += t2 - t1
        self.timings.channel += t3 - t2
        self.timings.messages += 1
        return result

    def _mailto(self, delivery: Claimed) -> str | None:
        address = self.config.get("UNSUBSCRIBE_MAILTO")
        if not address:
            return None
        from portal.delivery.mime import unsubscribe_mailto

        return unsubscribe_mailto(address, self.tokens.unsubscribe_token(delivery.id, delivery.contact_id))

    def _release(self, rest: list[Claimed], due_in: int, cancelled: bool = False) -> None:
        """Give back claimed deliveries that were not attempted (the attempt is not counted),
        or cancel them when their campaign has been cancelled."""
        if not rest:
            return
        started = time.perf_counter()
        db.session.execute(
            update(Delivery),
            [
                {
                    "id": d.id,
                    "status": DeliveryStatus.CANCELLED if cancelled else DeliveryStatus.PENDING,
                    "attempts": d.attempts - 1,
                    "due_at": utcnow() + timedelta(seconds=due_in),
                    "lease_owner": None,
                    "lease_expires_at": None,
                }
                for d in rest
            ],
        )
        db.session.commit()
        self.timings.database += time.perf_counter() - started

    # -- recording ----------------------------------------------------------------------------
    def _record(self, results: list[tuple[Claimed, SendResult | str]], outcome: BatchOutcome) -> str:
        """Write a chunk's results in a few statements and commit; returns the campaign's
        status, read in the same transaction (a pause or cancel stops the next chunk)."""
        if not results:
            return CampaignStatus.RUNNING
        started = time.perf_counter()
        if db.session.get_bind().dialect.name == "postgresql":
            # Not waiting for the WAL flush: a crash of the database server itself could
            # forget the last fraction of a second of results, and those messages would be
            # sent again, the same as messages in flight when a worker dies; none is lost.
            db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))
        now = utcnow()
        sent_ids: list[int] = []
        changes: list[dict[str, Any]] = []
        bounced: list[Claimed] = []
        failed_before = outcome.failed
        pause_reason = ""
        for delivery, result in results:
            cleared = {"id": delivery.id, "lease_owner": None, "lease_expires_at": None}
            if isinstance(result, str):
                changes.append({**cleared, "status": DeliveryStatus.SKIPPED, "reason": result})
                outcome.skipped += 1
                continue
            reply = {"result_code": result.code, "result_detail": result.detail[:32], "result_message": result.message}
            if result.outcome is Outcome.ACCEPTED:
                sent_ids.append(delivery.id)
            elif result.outcome is Outcome.RETRY:
                delay = self._retry_delay(delivery.attempts) if not result.affects_batch else self._backoff
                if delay is None:
                    changes.append({**cleared, **reply, "status": DeliveryStatus.FAILED, "reason": "soft_bounce"})
                    outcome.failed += 1
                else:
                    attempts = delivery.attempts - 1 if result.affects_batch else delivery.attempts
                    changes.append(
                        {
                            **cleared,
                            **reply,
                            "status": DeliveryStatus.PENDING,
                            "attempts": attempts,
                            "due_at": now + timedelta(seconds=delay),
                        }
                    )
                    outcome.retry += 1
            elif result.outcome is Outcome.HARD_BOUNCE:
                changes.append({**cleared, **reply, "status": DeliveryStatus.BOUNCED})
                bounced.append(delivery)
                outcome.bounced += 1
            elif result.outcome is Outcome.PAUSE:
                # Not this recipient's fault: send it again once the campaign is resumed.
                changes.append(
                    {**cleared, **reply, "status": DeliveryStatus.PENDING, "attempts": delivery.attempts - 1}
                )
                pause_reason = f"{result.code} {result.message}".strip()
            else:
                changes.append({**cleared, **reply, "status": DeliveryStatus.FAILED})
                outcome.failed += 1
        if sent_ids:
            db.session.execute(
                update(Delivery)
                .where(Delivery.id.in_(sent_ids))
                .values(status=DeliveryStatus.SENT, sent_at=now, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            outcome.sent += len(sent_ids)
        if changes:
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for change in changes:  # one executemany per shape of change
                by_keys[tuple(sorted(change))].append(change)
            for rows in by_keys.values():
                db.session.execute(update(Delivery), rows)
        failed = outcome.failed - failed_before
        if bounced:
            _suppress_bounced(bounced, results, now)
        campaign_id = results[0][0].campaign_id
        if pause_reason:
            from portal.campaigns.monitoring import pause_for

            pause_for(campaign_id, "refused", reply=pause_reason[:500])
            outcome.paused = pause_reason
        settled = (len(sent_ids), len(bounced), failed)
        if any(settled):
            status = self._count_and_judge(campaign_id, *settled)
        else:
            status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
        db.session.commit()
        self.timings.database += time.perf_counter() - started
        return status

    def _count_and_judge(self, campaign_id: int, sent: int, bounced: int, failed: int) -> str:
        """Add the chunk to the campaign's counts and judge the alerts on them, in the chunk's
        transaction; returns the campaign's status (paused when a limit was crossed)."""
        from portal.campaigns.monitoring import check_alerts, count_results

        limits = self._alert_limits
        counts, status = count_results(campaign_id, sent, bounced, failed, limits.window if limits else 1000)
        if limits is None:
            return status
        if counts.since_resume >= limits.min_attempts:
            self._chunk = RECORD_EVERY
        if status == CampaignStatus.RUNNING and check_alerts(campaign_id, counts, limits):
            return CampaignStatus.PAUSED
        return status

    def _retry_delay(self, attempts: int) -> int | None:
        if attempts < 1 or attempts > len(self._retry_delays):
            return None
        return self._retry_delays[attempts - 1]


def _suppress_bounced(bounced: list[Claimed], results: list[tuple[Claimed, Any]], now: datetime) -> None:
    """A hard bounce suppresses the contact for good: its address's hash stays on the
    suppression list, so no later import brings it back."""
    from portal.audience.service import suppress

    replies = {d.id: r for d, r in results}
    ids = [d.contact_id for d in bounced]
    addresses = {
        row.id: row
        for row in db.session.execute(select(Contact.id, Contact.email, Contact.mobile).where(Contact.id.in_(ids)))
    }
    db.session.execute(
        update(Contact)
        .where(Contact.id.in_(ids))
        .values(suppressed=True, suppression_reason="hard_bounce", updated_at=now)
        .execution_options(synchronize_session=False)
    )
    for delivery in bounced:
        row = addresses.get(delivery.contact_id)
        kind = "email" if delivery.channel == "email" else "mobile"
        value = getattr(row, kind) if row is not None else None
        if value:
            suppress(kind, value, "hard_bounce")
    db.session.add_all(
        ContactEvent(
            contact_id=d.contact_id,
            kind=EventKind.BOUNCE,
            occurred_at=now,
            properties={"delivery_id": d.id, "code": replies[d.id].code, "detail": replies[d.id].detail},
            source="delivery",
        )
        for d in bounced
    )
