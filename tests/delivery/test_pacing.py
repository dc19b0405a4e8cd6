"""Pacing per destination, the campaign throttle's give-back, and what each attempt leaves:
against a real Redis, a real SMTP server that limits one domain, and a group-robot stub."""

from __future__ import annotations

import time

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from portal import settings
from portal.audience.models import Contact
from portal.campaigns.models import Campaign, CampaignStatus
from portal.delivery.models import Delivery, DeliveryAttempt, DeliveryStatus, RobotNotice
from portal.delivery.pacing import Pacer, parse_domain_limits
from portal.extensions import db
from tests import factories
from tests.conftest import free_port


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis(app):
    return app.extensions["redis"]


@pytest.fixture
def team(app, make_user):
    with app.app_context():
        return {role: user.id for role, user in factories.people(make_user).items()}


def _users(team):
    from portal.auth.models import User

    return {role: db.session.get(User, user_id) for role, user_id in team.items()}


# -- the pacer ----------------------------------------------------------------------------------
def test_pacer_grants_up_to_the_limit_per_window_and_takes_back_what_is_unused(redis):
    clock = FakeClock()
    pacer = Pacer(redis, {"email:qq.com": 10}, window=60, clock=clock)
    assert pacer.reserve({"email:qq.com": 8, "email:example.org": 500}) == {"email:qq.com": 8, "email:example.org": 500}
    assert pacer.reserve({"email:qq.com": 8}) == {"email:qq.com": 2}
    pacer.give_back({"email:qq.com": 3})  # a batch sent 5 of its 8
    assert pacer.reserve({"email:qq.com": 8}) == {"email:qq.com": 3}
    clock.now += 60  # the next window
    assert pacer.reserve({"email:qq.com": 8}) == {"email:qq.com": 8}


def test_slowing_down_backs_off_doubling_per_destination(redis):
    clock = FakeClock()
    pacer = Pacer(redis, {}, clock=clock)
    assert pacer.slow_down("email:163.com", base=10) == clock.now + 10
    assert pacer.slow_down("email:163.com", base=10) == clock.now + 20
    assert set(pacer.slowed(["email:163.com", "email:qq.com"])) == {"email:163.com"}
    clock.now += 21
    assert pacer.slowed(["email:163.com"]) == {}


def test_domain_limits_setting_is_read_as_domain_rate_pairs():
    assert parse_domain_limits("qq.com=600, 163.com = 300\ngmail.com=1200") == {
        "qq.com": 600,
        "163.com": 300,
        "gmail.com": 1200,
    }
    with pytest.raises(ValueError):
        parse_domain_limits("qq.com:600")


# -- the group robot ----------------------------------------------------------------------------
def test_robot_notices_are_paced_at_the_robots_limit_and_none_is_lost(app, app_ctx, redis):
    from portal.delivery.channels.wecom import WeComRobot
    from portal.delivery.notices import post_robot_notices, queue_robot_notice
    from tests.conftest import served
    from tests.delivery.wecom_stubs import Robot

    window = 1.0  # the robot's minute, shortened so that the test takes seconds
    with served(Robot(per_window=20, window=window)) as robot_stub:
        app.config["WECOM_WEBHOOK_URL"] = f"{robot_stub.url}/cgi-bin/webhook/send?key=k"
        try:
            for number in range(45):
                queue_robot_notice("campaign.follow_up", contact=f"客户{number}", campaign="春季新品")
            db.session.commit()
            pacer = Pacer(redis, {robot_key(app): 20}, window=window)
            with WeComRobot(app.config["WECOM_WEBHOOK_URL"]) as robot:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    post_robot_notices(robot, pacer)
                    if not db.session.scalar(select(func.count()).where(RobotNotice.status == "pending")):
                        break
                    time.sleep(0.1)
        finally:
            app.config["WECOM_WEBHOOK_URL"] = ""
    statuses = dict(db.session.execute(select(RobotNotice.status, func.count()).group_by(RobotNotice.status)).all())
    assert statuses == {"sent": 45}  # 0 lost, 0 failed
    texts = [text for _, text in robot_stub.accepted]
    assert len(texts) == len(set(texts)) == 45  # each once
    assert all("春季新品" in text for text in texts)
    # Paced: never more than 20 in any window of the robot's, so (almost) nothing refused.
    times = [t for t, _ in robot_stub.accepted]
    assert max(sum(1 for u in times if t <= u < t + window * 0.95) for t in times) <= 20
    assert robot_stub.refused <= 3


def robot_key(app) -> str:
    from portal.delivery.pacing import robot_key as key

    return key(app.config["WECOM_WEBHOOK_URL"])


def test_robot_answering_45009_keeps_the_notice_for_later(app, app_ctx, redis):
    from portal.delivery.channels.wecom import WeComRobot
    from portal.delivery.notices import post_robot_notices, queue_robot_notice
    from tests.conftest import served
    from tests.delivery.wecom_stubs import Robot

    with served(Robot(per_window=0, window=60)) as robot_stub:  # someone else used the minute
        app.config["WECOM_WEBHOOK_URL"] = f"{robot_stub.url}/hook"
        try:
            queue_robot_notice("campaign.follow_up", contact="张三", campaign="春季新品")
            queue_robot_notice("campaign.follow_up", contact="李四", campaign="春季新品")
            db.session.commit()
            pacer = Pacer(redis, {}, window=60)
            with WeComRobot(app.config["WECOM_WEBHOOK_URL"]) as robot:
                assert post_robot_notices(robot, pacer) == {"posted": 0, "failed": 0, "waiting": 2}
                # Slowed down: the next run does not even try.
                assert post_robot_notices(robot, pacer)["posted"] == 0
        finally:
            app.config["WECOM_WEBHOOK_URL"] = ""
    assert robot_stub.refused == 1
    rows = db.session.scalars(select(RobotNotice)).all()
    assert [(r.status, r.attempts) for r in rows] == [("pending", 0), ("pending", 0)]


# -- email: per recipient domain ----------------------------------------------------------------
class DomainLimitHandler:
    """Accepts everything, except that a RCPT at `domain` beyond `allowed` gets 421 "too many"
    while `limiting` is on; a mailbox named busy1 gets one 450 and then is accepted."""

    def __init__(self, domain: str, allowed: int) -> None:
        self.domain, self.allowed = domain, allowed
        self.limiting = True
        self.accepted_at_domain = 0
        self.busy_once = False
        self.delivered: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("busy1@") and not self.busy_once:
            self.busy_once = True
            return "450 4.2.1 Mailbox busy, try again later"
        if address.endswith("@" + self.domain):
            if self.limiting and self.accepted_at_domain >= self.allowed:
                return "421 4.7.28 Too many messages to this domain, slow down"
            self.accepted_at_domain += 1
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.delivered.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def limiting_smtp(app):
    handler = DomainLimitHandler("slow.test", allowed=3)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    previous = app.config["SMTP_URL"]
    app.config["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
    try:
        yield handler
    finally:
        app.config["SMTP_URL"] = previous
        controller.stop()


def _email_campaign(team, contacts: int, slow: int) -> tuple[int, list[int]]:
    users = _users(team)
    version = factories.approved_email(users["operations_specialist"], users["reviewer"])
    ids = factories.add_contacts(contacts)
    for contact_id in ids[:slow]:
        db.session.get(Contact, contact_id).email = f"u{contact_id}@slow.test"
    db.session.commit()
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "email", "content_version_id": version}],
    )
    return campaign_id, ids


def _statuses(campaign_id: int) -> dict[str, int]:
    rows = db.session.execute(
        select(Delivery.status, func.count()).where(Delivery.campaign_id == campaign_id).group_by(Delivery.status)
    )
    return dict(rows.all())


def test_a_domain_answering_421_is_slowed_alone_and_nothing_fails(app, app_ctx, team, limiting_smtp, redis):
    from jobs.sending import run_campaigns, send_deliveries

    campaign_id, _ids = _email_campaign(team, contacts=20, slow=8)
    run_campaigns()
    totals = send_deliveries(campaign_id)

    assert limiting_smtp.accepted_at_domain == 3
    others = [a for a in limiting_smtp.delivered if not a.endswith("@slow.test")]
    assert len(others) == 12  # the other domain is not held up
    assert _statuses(campaign_id) == {DeliveryStatus.SENT: 15, DeliveryStatus.PENDING: 5}
    assert totals["failed"] == totals["bounced"] == 0
    assert db.session.get(Campaign, campaign_id).status == CampaignStatus.RUNNING
    waiting = db.session.scalars(
        select(Delivery).where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.PENDING)
    ).all()
    # Not counted as attempts: a busy domain never turns into soft bounces.
    assert all(d.attempts == 0 for d in waiting)
    assert all(d.due_at > d.created_at for d in waiting)
    [tried] = [d for d in waiting if d.result_code == 421]
    assert db.session.scalars(select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == tried.id)).all() == [
        "throttled"
    ]

    # The domain calms down and the back-off is over: the rest goes, once each.
    limiting_smtp.limiting = False
    redis.flushdb()
    db.session.execute(update(Delivery).values(due_at=func.now()))
    db.session.commit()
    send_deliveries(campaign_id)
    assert _statuses(campaign_id) == {DeliveryStatus.SENT: 20}
    assert sorted(limiting_smtp.delivered) == sorted(db.session.scalars(select(Contact.email)).all())
    db.session.refresh(tried)
    assert (tried.result_code, tried.result_detail, tried.result_message) == (None, "", "")
    history = db.session.scalars(
        select(DeliveryAttempt.outcome).where(DeliveryAttempt.delivery_id == tried.id).order_by(DeliveryAttempt.id)
    ).all()
    assert history == ["throttled", "accepted"]


def test_a_paced_domain_gets_at_most_its_rate_per_window(app, app_ctx, team, limiting_smtp, redis, make_user):
    from jobs.sending import run_campaigns, send_deliveries

    settings.set_value(None, "pacing.email_domains", "slow.test=4")
    db.session.commit()
    limiting_smtp.limiting = False
    campaign_id, _ids = _email_campaign(team, contacts=12, slow=10)
    run_campaigns()
    send_deliveries(campaign_id)
    assert limiting_smtp.accepted_at_domain == 4
    assert _statuses(campaign_id) == {DeliveryStatus.SENT: 6, DeliveryStatus.PENDING: 6}
    waiting = db.session.scalars(select(Delivery).where(Delivery.status == DeliveryStatus.PENDING)).all()
    assert all(d.attempts == 0 for d in waiting)
    assert db.session.scalar(select(func.count()).select_from(DeliveryAttempt)) == 6  # only what was tried


def test_throttle_counts_only_what_a_claim_took(app, app_ctx, team, limiting_smtp, redis):
    from jobs.sending import run_campaigns, send_deliveries

    limiting_smtp.limiting = False
    campaign_id, _ids = _email_campaign(team, contacts=7, slow=0)
    db.session.execute(update(Campaign).where(Campaign.id == campaign_id).values(throttle_per_minute=600))
    db.session.commit()
    run_campaigns()
    send_deliveries(campaign_id)
    assert _statuses(campaign_id) == {DeliveryStatus.SENT: 7}
    counters = [int(redis.get(key)) for key in redis.scan_iter(f"portal:throttle:{campaign_id}:*")]
    assert sum(counters) == 7  # not min(batch, throttle) = 600


def test_a_successful_retry_clears_the_earlier_error_and_both_attempts_are_kept(
    app, app_ctx, team, limiting_smtp, redis
):
    from jobs.sending import run_campaigns, send_deliveries

    campaign_id, ids = _email_campaign(team, contacts=3, slow=0)
    db.session.get(Contact, ids[0]).email = "busy1@example.org"
    db.session.commit()
    run_campaigns()
    send_deliveries(campaign_id)
    row = db.session.scalar(select(Delivery).where(Delivery.contact_id == ids[0]))
    assert (row.status, row.result_code) == (DeliveryStatus.PENDING, 450)
    db.session.execute(update(Delivery).values(due_at=func.now()))
    db.session.commit()
    send_deliveries(campaign_id)
    db.session.refresh(row)
    assert (row.status, row.result_code, row.result_detail, row.result_message) == ("sent", None, "", "")
    attempts = db.session.execute(
        select(DeliveryAttempt.attempt, DeliveryAttempt.outcome, DeliveryAttempt.code)
        .where(DeliveryAttempt.delivery_id == row.id)
        .order_by(DeliveryAttempt.id)
    ).all()
    assert [tuple(a) for a in attempts] == [(1, "retry", 450), (2, "accepted", 250)]


def test_sms_gateway_saying_too_many_slows_sms_without_failing_anyone(app, app_ctx, team, gateway, redis):
    from jobs.sending import run_campaigns, send_deliveries

    users = _users(team)
    version = factories.approved_content(
        users["operations_specialist"], users["reviewer"], "短信", {"sms_text": "新品上市。回T退订"}, "sms"
    )
    factories.add_contacts(3, channels=("sms",))
    app.config.update(SMS_API_URL=f"{gateway.url}/sms", SMS_API_SECRET="gateway-secret")
    try:
        campaign_id = factories.scheduled_campaign(
            users["marketing_manager"],
            factories.segment_of(),
            [{"kind": "message", "channel": "sms", "content_version_id": version}],
        )
        gateway.replies[:] = [(429, {"code": "rate_limited"})]
        run_campaigns()
        send_deliveries(campaign_id)
    finally:
        app.config.update(SMS_API_URL="", SMS_API_SECRET="")
    assert len(gateway.requests) == 1  # the other two waited for the back-off instead of trying
    rows = db.session.scalars(select(Delivery).where(Delivery.campaign_id == campaign_id)).all()
    assert [(d.status, d.attempts) for d in rows] == [(DeliveryStatus.PENDING, 0)] * 3
    assert Pacer(redis, {}).slowed(["sms"])
