"""WeCom customer contact against a local stub of the customer-contact API: the access token,
mass-send tasks per owning employee, per-customer results, WeCom's limits, the customer sync."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.audience.models import Contact
from portal.delivery.channels import Outcome
from portal.delivery.channels.wecom_customer import AttachmentError, WeComCustomerApi, clean_attachments
from portal.delivery.models import Delivery, DeliveryAttempt, DeliveryStatus, WeComTask
from portal.extensions import db
from portal.models_base import utcnow
from tests import factories
from tests.conftest import served
from tests.delivery.wecom_stubs import CustomerApi

LINK = {"msgtype": "link", "link": {"title": "春季新品", "url": "https://www.example.com/spring", "desc": "新品"}}
IMAGE = {"msgtype": "image", "image": {"pic_url": "https://www.example.com/spring.png"}}
MINIPROGRAM = {
    "msgtype": "miniprogram",
    "miniprogram": {"title": "预约", "appid": "wx123", "page": "pages/book", "pic_media_id": "MEDIA"},
}


@pytest.fixture
def wecom(app):
    with served(CustomerApi()) as stub:
        app.config.update(WECOM_API_URL=stub.url, WECOM_CORP_ID="ww-corp", WECOM_CONTACT_SECRET="contact-secret")
        try:
            yield stub
        finally:
            app.config.update(WECOM_CORP_ID="", WECOM_CONTACT_SECRET="")


@pytest.fixture
def redis(app):
    return app.extensions["redis"]


def _api(stub, redis, secret: str = "contact-secret") -> WeComCustomerApi:  # noqa: S107 - the stub's
    return WeComCustomerApi("ww-corp", secret, api_url=stub.url, redis=redis)


# -- the access token ---------------------------------------------------------------------------
def test_token_is_cached_shared_and_fetched_again_when_wecom_says_it_expired(app_ctx, wecom, redis):
    wecom.add_customer("zhangsan", "wm1")
    with _api(wecom, redis) as api:
        assert api.follow_users()[0].ok and api.follow_users()[0].ok
    assert wecom.token_requests == 1
    with _api(wecom, redis) as other_worker:
        assert other_worker.follow_users()[1] == ["zhangsan"]
    assert wecom.token_requests == 1  # the cached token, from Redis
    wecom.expire_tokens()
    with _api(wecom, redis) as api:
        result, users = api.follow_users()
    assert (result.ok, users, wecom.token_requests) == (True, ["zhangsan"], 2)


def test_refused_secret_pauses_rather_than_failing_each_customer(app_ctx, wecom, redis):
    with _api(wecom, redis, secret="wrong") as api:
        created = api.add_msg_template("zhangsan", ["wm1"], "hi")
    assert (created.result.outcome, created.result.detail) == (Outcome.PAUSE, "40001")
    assert "wrong" not in created.result.message


def test_attachments_are_checked_before_they_reach_wecom():
    assert clean_attachments([LINK, IMAGE, MINIPROGRAM])[0] == {
        "msgtype": "link",
        "link": {"title": "春季新品", "url": "https://www.example.com/spring", "desc": "新品"},
    }
    for bad in ([{"msgtype": "video"}], [{"msgtype": "link", "link": {"title": "x"}}], [IMAGE] * 10):
        with pytest.raises(AttachmentError):
            clean_attachments(bad)


# -- a WeCom step -------------------------------------------------------------------------------
@pytest.fixture
def team(app, make_user):
    with app.app_context():
        return {role: user.id for role, user in factories.people(make_user).items()}


def _users(team):
    from portal.auth.models import User

    return {role: db.session.get(User, user_id) for role, user_id in team.items()}


def _customers(ids: list[int], owners: list[str]) -> None:
    for contact_id, owner in zip(ids, owners, strict=True):
        contact = db.session.get(Contact, contact_id)
        contact.wecom_external_userid = f"wm{contact_id}" if owner else ""
        contact.wecom_owner_userid = owner
    db.session.commit()


def test_wecom_step_sends_one_task_per_owner_and_reads_each_customers_result(app, app_ctx, team, wecom, redis):
    from jobs.sending import collect_wecom_results, run_campaigns, send_deliveries

    users = _users(team)
    version = factories.approved_content(
        users["operations_specialist"], users["reviewer"], "企微通知", {"wecom_text": "春季新品上市"}, "wecom"
    )
    ids = factories.add_contacts(7, channels=("wecom",))
    _customers(ids, ["zhangsan", "zhangsan", "zhangsan", "lisi", "lisi", "lisi", ""])
    for contact_id in ids[:5]:
        wecom.add_customer(db.session.get(Contact, contact_id).wecom_owner_userid, f"wm{contact_id}")
    # ids[5]: lisi has no such customer (deleted them); ids[6]: not a WeCom customer at all;
    # ids[2] already had the mass messages WeCom allows (another tool sent them).
    wecom.received[f"wm{ids[2]}"] = 4
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [
            {
                "kind": "message",
                "channel": "wecom",
                "content_version_id": version,
                "config": {"wecom_attachments": [LINK, IMAGE]},
            }
        ],
    )
    run_campaigns()
    totals = send_deliveries(campaign_id)
    assert totals["submitted"] == 5

    bodies = sorted(wecom.task_bodies(), key=lambda b: b["sender"])
    assert [(b["sender"], sorted(b["external_userid"])) for b in bodies] == [
        ("lisi", sorted([f"wm{ids[3]}", f"wm{ids[4]}", f"wm{ids[5]}"])),
        ("zhangsan", sorted(f"wm{i}" for i in ids[:3])),
    ]
    assert bodies[0]["text"] == {"content": "春季新品上市"} and bodies[0]["attachments"] == [LINK, IMAGE]
    by_contact = dict(db.session.execute(select(Delivery.contact_id, Delivery.status)).all())
    assert by_contact[ids[5]] == DeliveryStatus.FAILED  # WeCom's fail_list: not lisi's customer
    assert by_contact[ids[6]] == DeliveryStatus.EXCLUDED
    assert [by_contact[i] for i in ids[:5]] == [DeliveryStatus.SUBMITTED] * 5

    # Nobody has confirmed yet: nothing changes, the tasks stay open.
    assert collect_wecom_results()["sent"] == 0
    wecom.confirm()
    wecom.expire_tokens()  # two hours later: the token has expired meanwhile
    assert collect_wecom_results() == {"tasks": 2, "sent": 4, "failed": 1, "closed": 0}
    assert collect_wecom_results()["tasks"] == 0  # done; reading again changes nothing

    rows = {
        r.contact_id: r for r in db.session.scalars(select(Delivery).where(Delivery.campaign_id == campaign_id)).all()
    }
    assert [rows[i].status for i in ids[:5]] == ["sent", "sent", "failed", "sent", "sent"]
    assert rows[ids[2]].result_detail == "wecom_limit"
    assert rows[ids[0]].sent_at is not None and rows[ids[0]].result_detail == ""
    history = db.session.scalars(
        select(DeliveryAttempt.outcome)
        .where(DeliveryAttempt.delivery_id == rows[ids[0]].id)
        .order_by(DeliveryAttempt.id)
    ).all()
    assert history == ["submitted", "accepted"]
    assert db.session.scalar(select(func.count()).where(WeComTask.done.is_(False))) == 0


def test_planner_leaves_out_customers_over_wecoms_limits_with_the_reason(app, app_ctx, team):
    from portal import settings
    from portal.delivery.planner import exclusion_counts

    users = _users(team)
    version = factories.approved_content(
        users["operations_specialist"], users["reviewer"], "企微通知", {"wecom_text": "春季新品上市"}, "wecom"
    )
    ids = factories.add_contacts(4, channels=("wecom",))
    _customers(ids, ["zhangsan", "zhangsan", "zhangsan", ""])
    earlier = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "wecom", "content_version_id": version}],
        name="上周",
    )
    from portal.campaigns.models import CampaignStep

    step_id = db.session.scalar(select(CampaignStep.id).where(CampaignStep.campaign_id == earlier))
    now = utcnow()
    # ids[0] had a WeCom mass message an hour ago; ids[1] one 10 days ago.
    for contact_id, when in ((ids[0], now - timedelta(hours=1)), (ids[1], now - timedelta(days=10))):
        db.session.add(
            Delivery(
                campaign_id=earlier,
                step_id=step_id,
                contact_id=contact_id,
                channel="wecom",
                content_version_id=version,
                status=DeliveryStatus.SENT,
                due_at=when,
            )
        )
    db.session.commit()
    audience = select(Contact.id).where(Contact.id.in_(ids))
    counts = exclusion_counts(audience, "wecom", now)
    assert (counts["wecom_limit"], counts["no_address"], counts["entering"]) == (1, 1, 2)

    settings.set_value(None, "wecom.max_per_customer_per_month", 1)  # the month's allowance: one
    db.session.commit()
    counts = exclusion_counts(audience, "wecom", now)
    assert (counts["wecom_limit"], counts["entering"]) == (2, 1)


def test_sync_links_contacts_to_their_wecom_customer_id_and_owner(app, app_ctx, wecom):
    from jobs.audience import sync_wecom_customers

    ids = factories.add_contacts(3, channels=("wecom",))
    mobiles = [db.session.get(Contact, i).mobile for i in ids]
    wecom.add_customer("zhangsan", "wmA", mobiles[0].removeprefix("+86"))
    wecom.add_customer("zhangsan", "wmB", "")
    wecom.add_customer("lisi", "wmC", mobiles[1].removeprefix("+86"))
    assert sync_wecom_customers() == {"customers": 3, "linked": 2}
    linked = {c.id: (c.wecom_external_userid, c.wecom_owner_userid) for c in db.session.scalars(select(Contact)).all()}
    assert linked == {ids[0]: ("wmA", "zhangsan"), ids[1]: ("wmC", "lisi"), ids[2]: ("", "")}
    # The customer moves to another employee: the next sync follows.
    wecom.customers["lisi"].pop("wmC")
    wecom.add_customer("wangwu", "wmC", "")
    sync_wecom_customers()
    db.session.expire_all()
    assert db.session.get(Contact, ids[1]).wecom_owner_userid == "wangwu"


def test_wecom_refusing_our_secret_pauses_the_campaign_and_loses_nobody(app, app_ctx, team, wecom):
    from jobs.sending import run_campaigns, send_deliveries
    from portal.campaigns.models import Campaign, CampaignStatus

    users = _users(team)
    version = factories.approved_content(
        users["operations_specialist"], users["reviewer"], "企微通知", {"wecom_text": "春季新品上市"}, "wecom"
    )
    ids = factories.add_contacts(4, channels=("wecom",))
    _customers(ids, ["zhangsan", "zhangsan", "lisi", "lisi"])
    campaign_id = factories.scheduled_campaign(
        users["marketing_manager"],
        factories.segment_of(),
        [{"kind": "message", "channel": "wecom", "content_version_id": version}],
    )
    app.config["WECOM_CONTACT_SECRET"] = "revoked"
    run_campaigns()
    send_deliveries(campaign_id)
    assert db.session.get(Campaign, campaign_id).status == CampaignStatus.PAUSED
    rows = db.session.execute(select(Delivery.status, Delivery.attempts)).all()
    assert sorted(tuple(r) for r in rows) == [(DeliveryStatus.PENDING, 0)] * 4
    assert wecom.task_bodies() == []
