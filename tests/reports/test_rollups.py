"""The rollups against a full recomputation from the ledger, on the hand-built data of
tests/reports/conftest.py changed the way sends, tracking, unsubscribes and erasure change it."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import delete, func, select, text, update

from portal.audience.models import Contact, ContactEvent, ContactTag, Tag
from portal.audience.privacy import erase_person
from portal.audience.service import record_event
from portal.auth.models import User
from portal.delivery import tracking
from portal.delivery.models import Delivery, DeliveryStatus
from portal.delivery.tokens import Recipient, UnsubscribeTarget
from portal.models_base import utcnow
from portal.reports import metrics, rollups
from portal.reports.models import ReportDirtyContact, ReportRollup, ReportRollupState
from tests.reports.conftest import FIGURES, T0


def _figures(filters: metrics.Filters, recompute: bool) -> dict:
    total, groups = (metrics.recomputed if recompute else metrics.grouped)(filters)
    return {
        "total": asdict(total),
        "groups": {d: [asdict(m) for m in rows] for d, rows in groups.items()},
        "series": asdict(metrics.series(filters, recompute=recompute)),
    }


def assert_rollups_equal_recomputation(report_data) -> None:
    rollups.refresh()
    assert not rollups.db.session.scalar(select(func.count()).select_from(ReportDirtyContact))
    for params in (
        {},
        {"campaign_ids": [report_data["campaign"]]},
        {"campaign_ids": [report_data["other"]]},
        {"campaign_ids": [report_data["campaign"]], "conversion_days": 60, "bucket": "hour"},
    ):
        filters = metrics.Filters.from_params(params)
        assert metrics.rollups_answer(filters)
        assert _figures(filters, recompute=False) == _figures(filters, recompute=True), params


def _step_deliveries(db, step_id: int) -> list[Delivery]:
    return list(db.session.scalars(select(Delivery).where(Delivery.step_id == step_id).order_by(Delivery.id)))


def test_rollups_hold_the_hand_computed_figures(db, report_data):
    rollups.refresh()
    total, _groups = metrics.grouped(metrics.Filters(campaign_ids=(report_data["campaign"],)))
    assert {name: getattr(total, name) for name in FIGURES} == FIGURES
    # Cells of campaign step and day, per dimension key: not a row per message.
    assert db.session.scalar(select(func.count()).select_from(ReportRollup)) < 60


def test_rollups_equal_a_full_recomputation_after_sends_tracking_unsubscribes_and_erasure(db, report_data, make_user):
    assert_rollups_equal_recomputation(report_data)
    c1, c2, c3, c4, c5, c6 = db.session.scalars(select(Contact).order_by(Contact.id)).all()

    # A new message step is planned for everybody, then sent: four accepted, one hard bounce,
    # one soft bounce; c6 stays excluded.
    step2 = _step_deliveries(db, report_data["step2"])[0]
    from portal.campaigns.models import CampaignStep

    step3 = CampaignStep(
        campaign_id=report_data["campaign"],
        position=2,
        kind="message",
        channel="email",
        content_version_id=step2.content_version_id,
    )
    db.session.add(step3)
    db.session.flush()
    due = T0 + timedelta(days=3)
    for contact in (c1, c2, c3, c4, c5, c6):
        db.session.add(
            Delivery(
                campaign_id=step3.campaign_id,
                step_id=step3.id,
                contact_id=contact.id,
                channel="email",
                content_version_id=step2.content_version_id,
                status=DeliveryStatus.EXCLUDED if contact is c6 else DeliveryStatus.PENDING,
                reason="frequency_cap" if contact is c6 else "",
                due_at=due,
            )
        )
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)

    rows = {d.contact_id: d for d in _step_deliveries(db, step3.id)}
    sent_at = due + timedelta(hours=20)  # the next local day in Shanghai
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_([rows[c.id].id for c in (c1, c2, c3, c6)]))
        .where(Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SENDING, lease_owner="sender-1")
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(Delivery)
        .where(Delivery.id.in_([rows[c.id].id for c in (c1, c2, c3)]))
        .values(status=DeliveryStatus.SENT, sent_at=sent_at, lease_owner=None)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(Delivery),
        [
            {"id": rows[c4.id].id, "status": DeliveryStatus.BOUNCED, "result_code": 550},
            {"id": rows[c5.id].id, "status": DeliveryStatus.FAILED, "reason": "soft_bounce", "result_code": 452},
        ],
    )
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)

    # Opens and clicks through the tracking endpoints' own functions, repeats included.
    tracking.record_open(Recipient(rows[c1.id].id, c1.id))
    tracking.record_open(Recipient(rows[c1.id].id, c1.id))
    tracking.record_click(Recipient(rows[c2.id].id, c2.id), "https://example.com/x")
    tracking.record_click(Recipient(rows[c3.id].id, c3.id), "https://example.com/y")
    assert_rollups_equal_recomputation(report_data)

    # A bounce reported after the message had been accepted.
    db.session.execute(
        update(Delivery).where(Delivery.id == rows[c3.id].id).values(status=DeliveryStatus.BOUNCED, result_code=550)
    )
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)

    assert tracking.unsubscribe(UnsubscribeTarget(rows[c1.id].id, c1.id), method="one_click")
    assert_rollups_equal_recomputation(report_data)

    # Purchases (the conversions the rollups count) recorded, moved and deleted: c2 buys twice
    # after the new step (amounts whose float sums depend on their order), c5 buys after its
    # soft bounce (no conversion), c4 buys in the window of the other campaign.
    first = record_event(c2.id, "purchase", sent_at + timedelta(days=1), {"amount": 0.1}, "api:shop")
    record_event(c2.id, "purchase", sent_at + timedelta(days=2), {"amount": 0.2}, "api:shop")
    record_event(c5.id, "purchase", sent_at + timedelta(days=1), {"amount": 80}, "api:shop")
    record_event(c4.id, "purchase", T0 + timedelta(days=9), {"amount": 19.9}, "api:shop")
    record_event(c3.id, "download", sent_at + timedelta(days=1), {"amount": 5}, "api:shop")
    assert_rollups_equal_recomputation(report_data)
    converted_before = metrics.grouped(metrics.Filters(campaign_ids=(report_data["campaign"],)))[0].conversions
    db.session.execute(
        update(ContactEvent).where(ContactEvent.id == first).values(occurred_at=sent_at + timedelta(days=45))
    )
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)
    db.session.execute(delete(ContactEvent).where(ContactEvent.contact_id == c1.id, ContactEvent.kind == "purchase"))
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)
    # c1's purchase is gone: one conversion fewer in the campaign (c2's second purchase stays).
    converted_after = metrics.grouped(metrics.Filters(campaign_ids=(report_data["campaign"],)))[0].conversions
    assert converted_after == converted_before - 1

    # Grouping fields change: a tag given, a contact moving province.
    vip = db.session.scalar(select(Tag).where(Tag.name == "VIP"))
    db.session.add(ContactTag(contact_id=c3.id, tag_id=vip.id))
    db.session.execute(update(Contact).where(Contact.id == c4.id).values(province="江苏省"))
    db.session.commit()
    assert_rollups_equal_recomputation(report_data)

    def by_province() -> dict[str, metrics.Metrics]:
        return {
            m.key: m for m in metrics.grouped(metrics.Filters(campaign_ids=(report_data["campaign"],)))[1]["province"]
        }

    before = by_province()
    admin = db.session.get(User, make_user("administrator"))
    erase_person(admin, c1.id, datetime.now(UTC))
    assert_rollups_equal_recomputation(report_data)
    after = by_province()
    assert "" not in before and after[""].audience == 3  # c1's three messages, under no province now
    assert after["上海市"].audience == before["上海市"].audience - 3


def test_a_page_never_shows_rollups_older_than_the_setting(app, db, report_data):
    filters = metrics.Filters(campaign_ids=(report_data["campaign"],))
    first = metrics.compute(filters)
    assert first.total.delivered == FIGURES["delivered"]
    db.session.execute(
        update(Delivery)
        .where(Delivery.campaign_id == report_data["campaign"], Delivery.status == DeliveryStatus.FAILED)
        .values(status=DeliveryStatus.SENT, sent_at=T0)
    )
    db.session.commit()
    # Within the age limit the page may show the figures as they were, and says as of when.
    assert metrics.compute(filters).as_of == first.as_of
    app.config["REPORT_ROLLUP_MAX_AGE_SECONDS"] = 0
    try:
        later = metrics.compute(filters)
    finally:
        app.config["REPORT_ROLLUP_MAX_AGE_SECONDS"] = 60
    assert later.total.delivered == FIGURES["delivered"] + 2
    assert later.as_of > first.as_of


@pytest.mark.parametrize("params", [{"date_from": "2026-03-03"}, {"channel": "sms"}, {"step_id": 1}])
def test_filters_the_rollups_cannot_answer_exactly_are_computed_from_the_ledger(db, report_data, params):
    filters = metrics.Filters.from_params({"campaign_ids": [report_data["campaign"]], **params})
    assert not metrics.rollups_answer(filters)
    assert metrics.grouped(filters) == metrics.recomputed(filters)


def test_rollups_counted_before_they_held_conversions_count_them_after_the_upgrade(app, db, report_data):
    """A database counted by the older rollups (revision 0024: no conversion counters) is
    upgraded: the contacts with purchases are counted again at the next refresh, and every
    figure equals a full recomputation, although the states kept for the others are older."""
    rollups.refresh()
    older = rollups.COUNTERS[: rollups.COUNTERS.index("converted")]
    kept = {
        table: [dict(row) for row in db.session.execute(text(f"SELECT * FROM {table}")).mappings()]
        for table in ("report_rollups", "report_series_counts", "report_counted_contacts", "report_rollup_state")
    }
    for row in kept["report_rollups"]:
        for name in rollups.COUNTERS[len(older) :]:
            del row[name]
    for row in kept["report_counted_contacts"]:
        state = row["state"] if isinstance(row["state"], dict) else json.loads(row["state"])
        state["cells"] = [[*cell[:-1], cell[-1][: len(older)]] for cell in state["cells"]]
        row["state"] = json.dumps(state)
    db.session.remove()
    downgrade(revision="0024")
    try:
        with db.engine.begin() as connection:
            connection.execute(text("DELETE FROM report_dirty_contacts"))
            for table, rows in kept.items():
                connection.execute(text(f"DELETE FROM {table}"))
                columns = list(rows[0])
                connection.execute(
                    text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"),
                    rows,
                )
    finally:
        upgrade()
    rollups.forget_state()
    noted = set(db.session.scalars(select(ReportDirtyContact.contact_id)))
    buyers = set(db.session.scalars(select(ContactEvent.contact_id).where(ContactEvent.kind == "purchase")))
    assert noted == buyers & set(db.session.scalars(select(Delivery.contact_id)))
    assert_rollups_equal_recomputation(report_data)
    total, _groups = metrics.grouped(metrics.Filters(campaign_ids=(report_data["campaign"],)))
    assert {name: getattr(total, name) for name in FIGURES} == FIGURES


def test_threads_finding_the_rollups_past_half_their_age_refresh_them_once(app, db, report_data, monkeypatch):
    """Twenty managers' requests arriving as the figures pass half their age: one refresh, not one
    per request, and every request gets the state it left."""
    rollups.refresh()
    db.session.execute(update(ReportRollupState).values(refreshed_at=utcnow() - timedelta(hours=1)))
    db.session.commit()
    rollups.forget_state()
    refreshes = []
    real_refresh = rollups.refresh

    def refresh_slowly(*args, **kwargs):
        refreshes.append(threading.get_ident())
        time.sleep(0.2)  # long enough for every other request to arrive meanwhile
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(rollups, "refresh", refresh_slowly)
    arrived = threading.Barrier(4)

    def request(_n: int):
        with app.app_context():
            arrived.wait()
            try:
                return rollups.fresh_state()
            finally:
                db.session.remove()

    with ThreadPoolExecutor(4) as pool:
        states = list(pool.map(request, range(4)))
    assert len(refreshes) == 1
    assert len(set(states)) == 1 and utcnow() - states[0][0] < timedelta(minutes=1)
