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

Pacing per destination (portal/delivery/pacing.py) is asked once per batch: deliveries to a
destination over its limit, or slowed down after a "too many" (an SMTP 421 for one domain,
the SMS gateway's 429), wait for the next window or the back-off without counting as an
attempt, so a busy domain delays its own messages and fails none. Every attempt is kept in
`delivery_attempts`; the ledger row keeps the last answer (none after a success).

WeCom deliveries go out differently: one mass-send task per owning employee
(channels/wecom_customer.py) and the rows wait as `submitted` for the per-customer results
(wecom_tasks.py).

Per-message work is only what must differ: the template of a (step, version) is compiled
once, the MIME skeleton and the link tracker are made once, and each recipient gets the
rendering of their variables, their tracked links and their headers. An email is rendered
and built while the SMTP server takes in the one before it (`SmtpSession.send`'s
`while_waiting`), and goes out only once that one's answer has been acted on.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from itertools import groupby
from typing import Any

from sqlalchemy import bindparam, func, insert, select, text, update

from portal.audience.models import ConsentStatus, Contact, ContactConsent, ContactEvent, EventKind
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery.channels.base import ChannelUnavailable, Outcome, SendResult
from portal.delivery.mime import make_message_id
from portal.delivery.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    ExclusionReason,
    WeComTask,
)
from portal.delivery.pacing import Pacer, email_key, limits_from_settings
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
# A temporary SMTP refusal that is about our rate towards the domain, not the mailbox.
_TOO_MANY = re.compile(r"too many|rate.?limit|throttl|frequen|exceed|slow down|too fast", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not sent now because its destination is paced or slowed down: pending again at
    `until` (a time.time() value), the attempt not counted. `result` is the "too many"
    answer when the message was tried."""

    until: float
    result: SendResult | None = None


@dataclass(frozen=True, slots=True)
class Submitted:
    """Handed to WeCom in the mass-send task `msgid`; the customer's result comes later."""

    msgid: str


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
    # A WeCom step's attachments, checked (channels/wecom_customer.clean_attachments).
    attachments: Any = None


@dataclass(slots=True)
class _Built:
    """An email rendered and built for its recipient, or the reason it cannot be sent."""

    message: bytes = b""
    envelope_from: str = ""
    failure: SendResult | None = None
    render: float = 0.0
    mime: float = 0.0


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
    # Handed to WeCom as mass-send tasks; waiting for a destination's pace or back-off.
    submitted: int = 0
    deferred: int = 0
    # Claimed but not attempted (given back, waiting, or skipped): what the campaign's
    # throttle gives back.
    unused: int = 0


class Sender:
    """Sends claimed deliveries; one per sender job. Channels are opened on first use and
    reused for every message until `close`."""

    def __init__(
        self,
        app: Any,
        owner: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        from portal.campaigns.monitoring import AlertLimits

        self.app = app
        self.config = app.config
        self.owner = owner or f"{os.uname().nodename}:{os.getpid()}:{time.monotonic_ns()}"
        self.tokens = tracking_tokens(app)
        self.timings = Timings()
        self._materials: dict[tuple[int, int], _Material] = {}
        # The batch's next email, built while the server took the one before (see _send_one).
        self._built: dict[int, _Built] = {}
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
        if pacer is None:
            from portal.queue import redis_connection

            pacer = Pacer(
                redis_connection(), limits_from_settings(), window=float(self.config["PACING_WINDOW_SECONDS"])
            )
        self.pacer = pacer
        # Destinations slowed down, until when; the paced destination of each claimed delivery
        # and what is left of each destination's reservation (both for the batch in hand).
        self._slowed: dict[str, float] = {}
        self._paced: dict[int, str] = {}
        self._reserved: dict[str, int] = {}

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
                from portal.delivery.channels.wecom_customer import WeComCustomerApi
                from portal.queue import redis_connection

                channel = WeComCustomerApi.from_config(self.config, redis=redis_connection())
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
        results: list[tuple[Claimed, Any]] = self._pace(batch, contacts)
        if results:
            waiting = {d.id for d, _ in results}
            batch = [d for d in batch if d.id not in waiting]
        try:
            # In the batch's order (by step): WeCom steps as mass-send tasks, the rest one by one.
            runs = [list(run) for _wecom, run in groupby(batch, key=lambda d: d.channel == "wecom")]
            for number, run in enumerate(runs):
                rest = [d for later in runs[number + 1 :] for d in later]
                if run[0].channel == "wecom":
                    stop = self._send_wecom(run, contacts, results)
                    if stop is not None:
                        self._record(results, outcome)
                        if stop.outcome is Outcome.PAUSE:
                            outcome.paused = outcome.paused or stop.message or "wecom"
                            self._release(rest, due_in=0, outcome=outcome)
                        else:
                            outcome.unavailable = stop.message or "channel wecom unavailable"
                            self._release(rest, due_in=self._backoff, outcome=outcome)
                        return outcome
                    continue
                if not self._send_each(run, contacts, results, outcome):
                    self._release(rest, due_in=0, outcome=outcome)
                    return outcome
                results = []
            self._record(results, outcome)
        finally:
            self._give_back()
            self._built.clear()
        return outcome

    def _send_each(
        self,
        batch: list[Claimed],
        contacts: dict[int, dict[str, Any]],
        results: list[tuple[Claimed, Any]],
        outcome: BatchOutcome,
    ) -> bool:
        """Send `batch` (one channel's run of the claim) message by message, recording every
        chunk; the results of its last chunk are recorded. False when the batch must stop
        (the campaign stopped, the sender is stopping, the channel refused or is down): the
        rest of this run has been given back."""
        for number, delivery in enumerate(batch):
            if len(results) >= self._chunk:
                status = self._record(results, outcome)
                results = []
                if status != CampaignStatus.RUNNING:
                    # Paused: the rest waits for the resume. Cancelled: the rest never goes.
                    cancelled = status == CampaignStatus.CANCELLED
                    self._release(batch[number:], due_in=0, cancelled=cancelled, outcome=outcome)
                    return False
                if self._should_stop():
                    self._release(batch[number:], due_in=0, outcome=outcome)
                    outcome.stopped = True
                    return False
            contact = contacts.get(delivery.contact_id)
            reason = self._skip_reason(delivery, contact)
            if reason:
                results.append((delivery, reason))
                continue
            if self._slowed:
                # A destination said "too many" earlier in this batch: its rest waits too.
                until = self._slowed.get(self._destination(delivery, contact))
                if until is not None and until > time.time():
                    results.append((delivery, Deferred(until)))
                    continue
            try:
                result = self._send_one(delivery, contact, self._upcoming(batch, number + 1, contacts))  # type: ignore[arg-type]
            except ChannelUnavailable as unavailable:
                result = unavailable.result
            if self._paced:
                self._used(delivery)
            if result.outcome is Outcome.RETRY and not result.affects_batch and _too_many(delivery.channel, result):
                destination = self._destination(delivery, contact)
                until = self.pacer.slow_down(destination)
                self._slowed[destination] = until
                results.append((delivery, Deferred(until, result)))
                continue
            results.append((delivery, result))
            if result.outcome is Outcome.HARD_BOUNCE:
                contact["suppressed"] = True  # type: ignore[index] # nothing more for them in this batch
            if result.outcome is Outcome.PAUSE or result.affects_batch:
                self._record(results, outcome)
                rest = batch[number + 1 :]
                if result.outcome is Outcome.PAUSE:
                    self._release(rest, due_in=0, outcome=outcome)
                else:
                    outcome.unavailable = result.message or f"channel {delivery.channel} unavailable"
                    self._release(rest, due_in=self._backoff, outcome=outcome)
                channel = self._channels.pop(delivery.channel, None)
                if channel is not None:
                    channel.close()  # a refused or broken connection is not reused
                return False
        self._record(results, outcome)
        results.clear()
        return True

    def _upcoming(
        self, batch: list[Claimed], number: int, contacts: dict[int, dict[str, Any]]
    ) -> tuple[Claimed, dict[str, Any]] | None:
        """The delivery at `number` of the batch and its contact when it is an email that would
        be sent as things stand, to be built ahead; None otherwise."""
        if number >= len(batch) or batch[number].channel != "email":
            return None
        contact = contacts.get(batch[number].contact_id)
        if self._skip_reason(batch[number], contact):
            return None
        return batch[number], contact  # type: ignore[return-value]

    # -- pacing -------------------------------------------------------------------------------
    @staticmethod
    def _destination(delivery: Claimed, contact: dict[str, Any] | None) -> str:
        """The paced destination of a delivery: its email domain, the SMS gateway, or ""."""
        if contact is None:
            return ""
        if delivery.channel == "email":
            return email_key(contact["email"]) if contact.get("email") else ""
        if delivery.channel == "sms":
            return "sms"
        return ""

    def _pace(self, batch: list[Claimed], contacts: dict[int, dict[str, Any]]) -> list[tuple[Claimed, Any]]:
        """Reserve the batch's messages per destination (one round trip for the counts, one
        for the back-offs); returns the deliveries that must wait, as `Deferred` results."""
        self._paced, self._reserved = {}, {}
        wanted: dict[str, int] = defaultdict(int)
        destinations: dict[int, str] = {}
        for delivery in batch:
            destination = self._destination(delivery, contacts.get(delivery.contact_id))
            if destination:
                destinations[delivery.id] = destination
                wanted[destination] += 1
        if not wanted:
            return []
        now = time.time()
        self._slowed = {k: v for k, v in self._slowed.items() if v > now}
        self._slowed.update(self.pacer.slowed(list(wanted)))
        granted = self.pacer.reserve({k: n for k, n in wanted.items() if k not in self._slowed})
        self._reserved = {k: n for k, n in granted.items() if k in self.pacer.limits}
        left = dict(self._reserved)
        waiting: list[tuple[Claimed, Any]] = []
        next_window = self.pacer.next_window()
        for delivery in batch:
            destination = destinations.get(delivery.id)
            if not destination:
                continue
            if destination in self._slowed:
                waiting.append((delivery, Deferred(self._slowed[destination])))
            elif destination in left:
                if left[destination] <= 0:
                    waiting.append((delivery, Deferred(next_window)))
                else:
                    left[destination] -= 1
                    self._paced[delivery.id] = destination
        return waiting

    def _give_back(self) -> None:
        """Return to the pacer what the batch reserved and did not send."""
        if self._reserved:
            self.pacer.give_back({k: n for k, n in self._reserved.items() if n > 0})
        self._paced, self._reserved = {}, {}

    def _used(self, delivery: Claimed) -> None:
        destination = self._paced.pop(delivery.id, None)
        if destination is not None:
            self._reserved[destination] -= 1

    # -- WeCom customers ----------------------------------------------------------------------
    def _send_wecom(
        self, batch: list[Claimed], contacts: dict[int, dict[str, Any]], results: list[tuple[Claimed, Any]]
    ) -> SendResult | None:
        """One mass-send task per (step, content, owning employee); every customer WeCom takes
        becomes `submitted`. Returns the result that stops the batch (refused: pause; WeCom
        unreachable), or None."""
        groups: dict[tuple[int, int, str], list[Claimed]] = defaultdict(list)
        for delivery in batch:
            contact = contacts.get(delivery.contact_id)
            reason = self._skip_reason(delivery, contact)
            if reason:
                results.append((delivery, reason))
                continue
            groups[(delivery.step_id, delivery.content_version_id, contact["wecom_owner_userid"])].append(delivery)  # type: ignore[index]
        api = None
        for number, ((step_id, _version, owner), members) in enumerate(groups.items()):
            try:
                text, attachments = self._wecom_message(members[0])
            except Exception as exc:  # a template or an attachment WeCom would refuse: these only
                log.warning("WeCom step %s not sendable: %s", step_id, exc)
                failure = SendResult(Outcome.FAILED, 0, "unsendable", f"{type(exc).__name__}: {exc}"[:500])
                results.extend((d, failure) for d in members)
                continue
            if api is None:
                try:
                    api = self._channel("wecom")
                except ValueError as exc:  # not configured: as an SMS step without a gateway
                    failure = SendResult(Outcome.FAILED, 0, "unsendable", str(exc)[:500])
                    results.extend((d, failure) for members in list(groups.values())[number:] for d in members)
                    return None
            started = time.perf_counter()
            ids: dict[str, Claimed] = {}
            for delivery in members:
                external_userid = contacts[delivery.contact_id]["wecom_external_userid"]
                if external_userid in ids:  # two contacts linked to one customer: one message
                    results.append((delivery, SendResult(Outcome.FAILED, 0, "duplicate_customer", external_userid)))
                else:
                    ids[external_userid] = delivery
            created = api.add_msg_template(owner, list(ids), text, attachments)
            self.timings.channel += time.perf_counter() - started
            self.timings.messages += len(members)
            if not created.result.ok:
                results.extend((d, created.result) for d in members)
                if created.result.outcome is Outcome.PAUSE or created.result.affects_batch:
                    # The other employees' tasks were not tried: they wait, the attempt not counted.
                    later = time.time() + (0 if created.result.outcome is Outcome.PAUSE else self._backoff)
                    rest = [d for _key, others in list(groups.items())[number + 1 :] for d in others]
                    results.extend((d, Deferred(later)) for d in rest)
                    return created.result
                continue
            refused = set(created.fail_list)
            db.session.add(
                WeComTask(
                    campaign_id=members[0].campaign_id,
                    step_id=step_id,
                    owner_userid=owner,
                    msgid=created.msgid,
                    recipients=len(ids) - len(refused & set(ids)),
                )
            )
            for external_userid, delivery in ids.items():
                if external_userid in refused:
                    results.append(
                        (delivery, SendResult(Outcome.FAILED, created.result.code, "not_customer", external_userid))
                    )
                else:
                    results.append((delivery, Submitted(created.msgid)))
        return None

    def _wecom_message(self, delivery: Claimed) -> tuple[str, list[dict[str, Any]]]:
        """The text and attachments of a WeCom step: the same for every customer of a task, so
        the template sees no contact's fields (they fall back to their defaults)."""
        from portal.campaigns.models import CampaignStep
        from portal.delivery.channels.wecom_customer import clean_attachments

        material = self._material(delivery)
        if material.attachments is None:
            step = db.session.get(CampaignStep, delivery.step_id)
            material.attachments = clean_attachments((step.config or {}).get("wecom_attachments") if step else None)
        variables = {
            "contact": contact_variables({}),
            "campaign": {"name": material.campaign_name},
            "sender": {"company": self._from_name},
            "view_in_browser_url": "",
            "unsubscribe_url": "",
        }
        return material.content.templates["wecom_text"].render(variables), material.attachments

    def _contacts(self, batch: list[Claimed]) -> dict[int, dict[str, Any]]:
        from portal.audience.importing import member_of

        ids = list({d.contact_id for d in batch})
        columns = [getattr(Contact, name) for name in CONTACT_FIELDS]
        rows = db.session.execute(
            select(
                Contact.id,
                Contact.unsubscribed,
                Contact.suppressed,
                Contact.wecom_external_userid,
                Contact.wecom_owner_userid,
                *columns,
            ).where(member_of(Contact.id, ids))
        ).all()
        contacts = {row.id: row._asdict() for row in rows}
        consents = db.session.execute(
            select(ContactConsent.contact_id, ContactConsent.channel).where(
                member_of(ContactConsent.contact_id, ids), ContactConsent.status == ConsentStatus.GRANTED
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
        if delivery.channel == "wecom":
            if not contact.get("wecom_external_userid") or not contact.get("wecom_owner_userid"):
                return ExclusionReason.NO_ADDRESS
        elif not contact["email" if delivery.channel == "email" else "mobile"]:
            return ExclusionReason.NO_ADDRESS
        return ""

    def _send_one(
        self, delivery: Claimed, contact: dict[str, Any], upcoming: tuple[Claimed, dict[str, Any]] | None = None
    ) -> SendResult:
        """Render, build and send one message. For an email, `upcoming` (the next delivery of
        the batch, likely sent next) is rendered and built while the SMTP server takes this
        one in; it goes out only once this one's answer has been read and acted on, exactly
        as if it had been built then."""
        if delivery.channel == "email":
            return self._send_email(delivery, contact, upcoming)
        t0 = time.perf_counter()
        material = self._material(delivery)
        variables = self._variables(material, contact)
        try:
            if delivery.channel != "sms":
                raise ValueError(f"channel {delivery.channel!r} is not sent one by one")
            variables["unsubscribe_url"] = ""
            body = material.content.templates["sms_text"].render(variables)
            t1 = time.perf_counter()
            result = self._channel("sms").send(contact["mobile"], body, message_id=f"d{delivery.id}")
        except ChannelUnavailable:
            raise
        except Exception as exc:  # a template or a value that cannot be sent: this message only
            return _unsendable(delivery, exc)
        self.timings.render += t1 - t0
        self.timings.channel += time.perf_counter() - t1
        self.timings.messages += 1
        return result

    def _variables(self, material: _Material, contact: dict[str, Any]) -> dict[str, Any]:
        return {
            "contact": contact_variables(contact),
            "campaign": {"name": material.campaign_name},
            "sender": {"company": self._from_name},
            "view_in_browser_url": "",
        }

    def _build_email(self, delivery: Claimed, contact: dict[str, Any]) -> _Built:
        """The email of `delivery` for `contact`, rendered and built, or why it cannot be."""
        t0 = time.perf_counter()
        material = self._material(delivery)  # a version that cannot be sent stops the batch
        variables = self._variables(material, contact)
        try:
            templates = material.content.templates
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
        except Exception as exc:  # a template or a value that cannot be sent: this message only
            return _Built(failure=_unsendable(delivery, exc))
        return _Built(message, material.skeleton.envelope_from, render=t1 - t0, mime=time.perf_counter() - t1)

    def _send_email(
        self, delivery: Claimed, contact: dict[str, Any], upcoming: tuple[Claimed, dict[str, Any]] | None
    ) -> SendResult:
        built = self._built.pop(delivery.id, None) or self._build_email(delivery, contact)
        if built.failure is not None:
            return built.failure
        overlapped = 0.0

        def build_upcoming() -> None:
            # While the server takes this message in: the next one is ready when its turn
            # comes, or thrown away with the batch if this one's answer stops the batch.
            nonlocal overlapped
            if upcoming is None or upcoming[0].id in self._built:
                return
            # Only with its material at hand: preparing that reads the database, and a version
            # that cannot be sent must stop the batch at its own turn, not in this one's.
            if (upcoming[0].step_id, upcoming[0].content_version_id) in self._materials:
                started = time.perf_counter()
                self._built[upcoming[0].id] = self._build_email(*upcoming)
                overlapped += time.perf_counter() - started

        started = time.perf_counter()
        try:
            result = self._channel("email").send(
                built.envelope_from, contact["email"], built.message, while_waiting=build_upcoming
            )
        except ChannelUnavailable:
            raise
        except Exception as exc:  # a value that cannot be sent: this message only
            return _unsendable(delivery, exc)
        self.timings.render += built.render
        self.timings.mime += built.mime
        self.timings.channel += time.perf_counter() - started - overlapped
        self.timings.messages += 1
        return result

    def _mailto(self, delivery: Claimed) -> str | None:
        address = self.config.get("UNSUBSCRIBE_MAILTO")
        if not address:
            return None
        from portal.delivery.mime import unsubscribe_mailto

        return unsubscribe_mailto(address, self.tokens.unsubscribe_token(delivery.id, delivery.contact_id))

    def _release(
        self, rest: list[Claimed], due_in: int, cancelled: bool = False, outcome: BatchOutcome | None = None
    ) -> None:
        """Give back claimed deliveries that were not attempted (the attempt is not counted),
        or cancel them when their campaign has been cancelled."""
        if not rest:
            return
        if outcome is not None:
            outcome.unused += len(rest)
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
        history: list[dict[str, Any]] = []
        failed_before = outcome.failed
        pause_reason = ""
        for delivery, result in results:
            cleared = {"id": delivery.id, "lease_owner": None, "lease_expires_at": None}
            if isinstance(result, str):
                changes.append({**cleared, "status": DeliveryStatus.SKIPPED, "reason": result})
                outcome.skipped += 1
                outcome.unused += 1
                continue
            if isinstance(result, Deferred):
                change = {
                    **cleared,
                    "status": DeliveryStatus.PENDING,
                    "attempts": delivery.attempts - 1,
                    "due_at": datetime.fromtimestamp(result.until, UTC),
                }
                outcome.deferred += 1
                if result.result is None:
                    outcome.unused += 1
                else:
                    tried = result.result
                    change.update(result_code=tried.code, result_detail=tried.detail[:32], result_message=tried.message)
                    history.append(_attempt(delivery, now, AttemptOutcome.THROTTLED, tried))
                changes.append(change)
                continue
            if isinstance(result, Submitted):
                changes.append(
                    {
                        **cleared,
                        "status": DeliveryStatus.SUBMITTED,
                        "result_code": None,
                        "result_detail": "",
                        "result_message": "",
                    }
                )
                history.append(
                    {
                        "delivery_id": delivery.id,
                        "attempt": delivery.attempts,
                        "outcome": AttemptOutcome.SUBMITTED.value,
                        "code": None,
                        "detail": "",
                        "message": result.msgid,
                        "occurred_at": now,
                    }
                )
                outcome.submitted += 1
                continue
            history.append(_attempt(delivery, now, result.outcome.value, result))
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
            from portal.audience.importing import member_of

            db.session.execute(
                update(Delivery)
                .where(member_of(Delivery.id, sent_ids))
                # A success clears what an earlier attempt's refusal left (kept in the history).
                .values(
                    status=DeliveryStatus.SENT,
                    sent_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    result_code=None,
                    result_detail="",
                    result_message="",
                )
                .execution_options(synchronize_session=False)
            )
            outcome.sent += len(sent_ids)
        if changes:
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for change in changes:  # one executemany per shape of change
                by_keys[tuple(sorted(change))].append(change)
            for rows in by_keys.values():
                db.session.execute(update(Delivery), rows)
        if history:
            _insert_attempts(history, now)
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


def _unsendable(delivery: Claimed, exc: Exception) -> SendResult:
    log.warning("delivery %s not sendable: %s", delivery.id, exc)
    return SendResult(Outcome.FAILED, 0, "unsendable", f"{type(exc).__name__}: {exc}"[:500])


def _attempt(delivery: Claimed, now: datetime, outcome: str, result: SendResult) -> dict[str, Any]:
    """A `delivery_attempts` row of the attempt that `result` answered."""
    return {
        "delivery_id": delivery.id,
        "attempt": delivery.attempts,
        "outcome": outcome,
        "code": result.code or None,
        "detail": result.detail[:32],
        "message": result.message,
        "occurred_at": now,
    }


def _insert_attempts(rows: list[dict[str, Any]], now: datetime) -> None:
    """A chunk's `delivery_attempts` rows (every one made at `now`) in one statement: on
    PostgreSQL each column travels as one array and is unnested there, where an executemany
    is a statement per row (200 a chunk)."""
    if db.session.get_bind().dialect.name != "postgresql":
        db.session.execute(insert(DeliveryAttempt), rows)
        return
    from sqlalchemy.dialects.postgresql import ARRAY

    columns = DeliveryAttempt.__table__.c
    names = ("delivery_id", "attempt", "outcome", "code", "detail", "message")
    arrays = [bindparam(None, [row[name] for row in rows], type_=ARRAY(columns[name].type)) for name in names]
    values = func.unnest(*arrays).table_valued(*names).render_derived(name="tried")
    db.session.execute(
        insert(DeliveryAttempt).from_select(
            [*names, "occurred_at"],
            select(*(values.c[name] for name in names), bindparam(None, now, type_=columns.occurred_at.type)),
        )
    )


def _too_many(channel: str, result: SendResult) -> bool:
    """A temporary refusal that asks us to slow down towards the destination (every message
    to it would get the same), rather than one about this recipient."""
    if channel == "email":
        return result.code == 421 or (400 <= result.code < 500 and bool(_TOO_MANY.search(result.message)))
    if channel == "sms":
        return result.code == 429
    return False


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
