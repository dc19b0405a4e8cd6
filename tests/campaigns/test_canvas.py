"""The campaign canvas: inserting, moving, editing and removing steps (with contacts waiting),
the rules of a paused or running flow, the drawn paths and day markers, the live figures,
pause and resume, and the settings the campaign carries before publishing."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal import audit
from portal.audience.models import Contact
from portal.auth.models import User
from portal.campaigns import canvas, publishing, service
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep, Journey, JourneyStatus
from portal.campaigns.service import CampaignError
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db


def manager(ids):
    return db.session.get(User, ids["manager"])


def kinds(campaign_id, parent_id=None, branch=None):
    campaign = db.session.get(Campaign, campaign_id)
    db.session.refresh(campaign)
    return [(s.kind, (s.config or {}).get("days")) for s in service.path(campaign, parent_id, branch)]


def nurture(ids):
    """The operating guide's sequence: email day 1, wait 2 days, to openers an email on day 3,
    wait 4 days, email day 7."""
    actor = manager(ids)
    campaign = service.create_campaign(actor, {"name": "线索培育", "segment_id": ids["segment"]})
    email = {"content_version_id": ids["approved"]}
    first = service.insert_step(actor, campaign.id, "message", email)
    wait = service.insert_step(actor, campaign.id, "delay", {"days": "2"})
    branch = service.insert_step(actor, campaign.id, "branch", {"condition": "opened", "window_days": "0"})
    opened = service.insert_step(actor, campaign.id, "message", email, parent_id=branch.id, branch="yes")
    later = service.insert_step(actor, campaign.id, "delay", {"days": "4"})
    last = service.insert_step(actor, campaign.id, "message", email)
    return campaign.id, {"first": first.id, "wait": wait.id, "branch": branch.id, "opened": opened.id,
                         "later": later.id, "last": last.id}  # fmt: skip


def contacts(count):
    known = db.session.scalar(select(func.count(Contact.id)))
    rows = [Contact(email=f"p{known + n}@example.com", province="上海市") for n in range(count)]
    db.session.add_all(rows)
    db.session.flush()
    return [c.id for c in rows]


def start(campaign_id, status=CampaignStatus.PAUSED):
    campaign = db.session.get(Campaign, campaign_id)
    campaign.status = status
    campaign.started_at = datetime.now(UTC)
    db.session.commit()


def wait_at(campaign_id, step_id, count):
    for contact_id in contacts(count):
        db.session.add(Journey(campaign_id=campaign_id, contact_id=contact_id, step_id=step_id))
    db.session.commit()


def refusal(call, *args, **kwargs):
    with pytest.raises(CampaignError) as caught:
        call(*args, **kwargs)
    db.session.rollback()
    return caught.value


# -- building the flow ----------------------------------------------------------------------


def test_a_step_inserted_on_an_edge_goes_there_and_the_later_steps_move_down(app, setup):
    with app.app_context():
        campaign_id, _steps = nurture(setup)
        service.insert_step(manager(setup), campaign_id, "delay", {"days": "1"}, index=1)
        assert kinds(campaign_id) == [("message", None), ("delay", 1), ("delay", 2), ("branch", None),
                                      ("delay", 4), ("message", None)]  # fmt: skip
        positions = [s.position for s in service.path(db.session.get(Campaign, campaign_id))]
        assert positions == [0, 1, 2, 3, 4, 5]


def test_each_path_of_a_branch_holds_its_own_steps(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        actor = manager(setup)
        service.insert_step(actor, campaign_id, "delay", {"days": "1"}, parent_id=steps["branch"], branch="no", index=0)
        service.insert_step(
            actor, campaign_id, "action", {"action_type": "add_tag", "value": "未打开"},
            parent_id=steps["branch"], branch="no", index=0,
        )  # fmt: skip
        assert [k for k, _ in kinds(campaign_id, steps["branch"], "yes")] == ["message"]
        assert [k for k, _ in kinds(campaign_id, steps["branch"], "no")] == ["action", "delay"]
        assert service.validate(campaign_id) == []


def test_steps_move_up_and_down_and_by_drag_onto_another_path(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        actor = manager(setup)
        service.move_step_by(actor, steps["wait"], -1)
        assert [k for k, _ in kinds(campaign_id)][:2] == ["delay", "message"]
        service.move_step_by(actor, steps["wait"], 1)
        assert [k for k, _ in kinds(campaign_id)][:2] == ["message", "delay"]
        service.move_step(actor, steps["later"], parent_id=steps["branch"], branch="no", index=0)
        assert kinds(campaign_id, steps["branch"], "no") == [("delay", 4)]
        assert [k for k, _ in kinds(campaign_id)] == ["message", "delay", "branch", "message"]
        assert [s.position for s in service.path(db.session.get(Campaign, campaign_id))] == [0, 1, 2, 3]
        moved = db.session.scalars(select(audit.AuditEvent).where(audit.AuditEvent.action == "campaign.step_moved"))
        assert len(list(moved)) == 3


def test_a_branch_cannot_move_into_its_own_path(app, setup):
    with app.app_context():
        _campaign_id, steps = nurture(setup)
        error = refusal(
            service.move_step, manager(setup), steps["branch"], parent_id=steps["branch"], branch="yes", index=0
        )
        assert error.code == "into_itself"


def test_a_step_is_edited_with_its_own_fields_and_bad_values_are_refused_with_a_code(app, setup):
    with app.app_context():
        _campaign_id, steps = nurture(setup)
        actor = manager(setup)
        service.update_step(actor, steps["wait"], {"days": "3", "hours": "6", "content_version_id": "999"})
        assert db.session.get(CampaignStep, steps["wait"]).config == {"days": 3, "hours": 6, "relative_to": "previous"}
        assert refusal(service.update_step, actor, steps["wait"], {"days": "-1"}).code == "negative_delay"
        error = refusal(service.update_step, actor, steps["wait"], {"days": "两"})
        assert (error.code, error.params) == ("not_a_whole_number", {"value": "两"})
        draft = {"content_version_id": str(setup["draft"])}
        assert refusal(service.update_step, actor, steps["first"], draft).code == "content_not_approved"
        changed = db.session.scalars(select(audit.AuditEvent).where(audit.AuditEvent.action == "campaign.step_changed"))
        assert len(list(changed)) == 1


# -- contacts waiting ------------------------------------------------------------------------


def test_removing_a_step_where_contacts_wait_asks_where_they_go(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id)
        wait_at(campaign_id, steps["later"], 3)
        error = refusal(service.remove_step, manager(setup), steps["later"])
        assert (error.code, error.params) == ("contacts_waiting", {"count": 3})
        service.remove_step(manager(setup), steps["later"], "next")
        waiting = db.session.scalars(select(Journey).where(Journey.campaign_id == campaign_id)).all()
        assert {(j.step_id, j.status) for j in waiting} == {(steps["last"], JourneyStatus.ACTIVE)}
        removed = db.session.scalars(
            select(audit.AuditEvent).where(audit.AuditEvent.action == "campaign.step_removed")
        ).one()
        assert removed.details["waiting"] == 3 and removed.details["went"] == "next"


def test_contacts_waiting_at_a_removed_branch_can_leave_the_campaign(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id)
        wait_at(campaign_id, steps["branch"], 2)
        service.remove_step(manager(setup), steps["branch"], "exit")
        journeys = db.session.scalars(select(Journey).where(Journey.campaign_id == campaign_id)).all()
        assert {(j.status, j.exit_reason) for j in journeys} == {(JourneyStatus.EXITED, "step_removed")}
        assert db.session.get(CampaignStep, steps["opened"]) is None  # its paths went with it


def test_a_step_with_messages_in_the_ledger_stays(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id)
        (contact_id,) = contacts(1)
        db.session.add(
            Delivery(
                campaign_id=campaign_id, step_id=steps["first"], contact_id=contact_id, channel="email",
                content_version_id=setup["approved"], status=DeliveryStatus.SENT,
            )
        )  # fmt: skip
        db.session.commit()
        error = refusal(service.remove_step, manager(setup), steps["first"])
        assert (error.code, error.params) == ("step_has_history", {"count": 1})


def test_a_paused_flow_takes_new_steps_only_after_where_contacts_wait(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id)
        wait_at(campaign_id, steps["later"], 2)
        actor = manager(setup)
        error = refusal(service.insert_step, actor, campaign_id, "delay", {"days": "1"}, index=1)
        assert (error.code, error.params) == ("contacts_past", {"count": 2})
        service.insert_step(actor, campaign_id, "delay", {"days": "1"}, index=4)
        assert [k for k, _ in kinds(campaign_id)][-2:] == ["delay", "message"]
        assert refusal(service.move_step_by, actor, steps["last"], -1).code == "started_order_fixed"
        # A delay may change while paused.
        service.update_step(actor, steps["later"], {"days": "5"})


def test_a_running_campaign_refuses_every_change_with_a_code(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id, CampaignStatus.RUNNING)
        actor = manager(setup)
        for call, args in (
            (service.insert_step, (actor, campaign_id, "delay", {"days": "1"})),
            (service.update_step, (actor, steps["wait"], {"days": "1"})),
            (service.remove_step, (actor, steps["wait"])),
            (service.move_step_by, (actor, steps["wait"], 1)),
            (service.update_settings, (actor, campaign_id, {"name": "x"})),
        ):
            assert refusal(call, *args).code == "not_editable"


# -- what the canvas draws ------------------------------------------------------------------


def test_the_canvas_draws_both_paths_and_day_markers_from_the_delays(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        lane = canvas.layout(db.session.get(Campaign, campaign_id))
        main = {n.step.id: n for n in lane.nodes}
        assert [n.number for n in lane.nodes] == [1, 2, 3, 5, 6]
        branch = main[steps["branch"]]
        assert [n.step.id for n in branch.yes.nodes] == [steps["opened"]] and branch.no.nodes == []
        assert branch.yes.nodes[0].day == 3 and branch.yes.nodes[0].number == 4
        marked = [(n.day, n.step.id) for n in lane.nodes if n.show_day]
        assert marked == [(1, steps["first"]), (3, steps["branch"]), (7, steps["last"])]


def test_the_figures_on_each_step_agree_with_the_journeys_and_the_ledger(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id, CampaignStatus.RUNNING)
        wait_at(campaign_id, steps["wait"], 4)
        wait_at(campaign_id, steps["later"], 1)
        sent = datetime.now(UTC)
        for n, contact_id in enumerate(contacts(3)):
            db.session.add(
                Delivery(
                    campaign_id=campaign_id, step_id=steps["first"], contact_id=contact_id, channel="email",
                    content_version_id=setup["approved"],
                    status=DeliveryStatus.SENT if n < 2 else DeliveryStatus.BOUNCED,
                    opened_at=sent if n == 0 else None, clicked_at=sent if n == 0 else None,
                )
            )  # fmt: skip
        db.session.commit()
        figures = canvas.step_figures(campaign_id)
        assert figures[steps["wait"]] == {"waiting": 4}
        assert figures[steps["later"]] == {"waiting": 1}
        assert figures[steps["first"]] == {"reached": 3, "sent": 3, "delivered": 2, "opened": 1, "clicked": 1}
        assert [c.email for c in canvas.contacts_behind(campaign_id, steps["first"], "opened")] == ["p6@example.com"]


# -- settings, pause and resume --------------------------------------------------------------


def test_owner_planned_start_and_a_chosen_send_window(app, setup, make_user):
    from portal.campaigns.runner import in_send_window, next_send_time

    with app.app_context():
        campaign_id, _steps = nurture(setup)
        campaign = db.session.get(Campaign, campaign_id)
        assert campaign.owner_id == setup["manager"]  # the creator, by default
        other = make_user("operations_specialist")
        values = {"owner_id": str(other), "planned_start": "2030-01-07T09:30", "timezone": "Asia/Shanghai",
                  "window_start": "09:00", "window_end": "18:00", "weekdays": ["1", "2", "3", "4", "5"]}  # fmt: skip
        service.update_settings(manager(setup), campaign_id, values)
        campaign = db.session.get(Campaign, campaign_id)
        assert (campaign.owner_id, campaign.window_days) == (other, "12345")
        assert campaign.scheduled_at == datetime(2030, 1, 7, 1, 30, tzinfo=UTC)
        saturday_noon = datetime(2030, 1, 5, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
        assert not in_send_window(campaign, saturday_noon)
        assert next_send_time(campaign, saturday_noon) == datetime(2030, 1, 7, 1, 0, tzinfo=UTC)
        assert in_send_window(campaign, saturday_noon + timedelta(days=2))
        reviewer = db.session.scalar(select(User).where(User.name == "reviewer"))
        for bad, code in (
            ({"weekdays": []}, "no_weekday"),
            ({"timezone": "Mars/Olympus"}, "unknown_timezone"),
            ({"window_start": "25:00"}, "bad_window_time"),
            ({"planned_start": "明天"}, "bad_start"),
            ({"owner_id": str(reviewer.id)}, "unknown_owner"),
        ):
            assert refusal(service.update_settings, manager(setup), campaign_id, bad).code == code


def test_a_flow_template_starts_the_guides_nurture_sequence(app, setup):
    with app.app_context():
        campaign = service.create_campaign(manager(setup), {"name": "模板", "template": "nurture"})
        lane = canvas.layout(db.session.get(Campaign, campaign.id))
        assert [n.step.kind for n in lane.nodes] == ["message", "delay", "branch", "delay", "message"]
        assert [n.day for n in lane.nodes if n.show_day] == [1, 3, 7]
        problems = [p.message for p in service.validate(campaign.id)]
        assert problems.count("This message step has no content.") == 3


def test_pause_says_what_it_holds_and_resume_is_its_own_audited_action(app, setup):
    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id, CampaignStatus.RUNNING)
        wait_at(campaign_id, steps["wait"], 2)
        (contact_id,) = contacts(1)
        db.session.add(
            Delivery(campaign_id=campaign_id, step_id=steps["first"], contact_id=contact_id, channel="email",
                     content_version_id=setup["approved"], status=DeliveryStatus.PENDING)
        )  # fmt: skip
        db.session.commit()
        publishing.change_status(manager(setup), campaign_id, "pause")
        paused = db.session.scalars(select(audit.AuditEvent).where(audit.AuditEvent.action == "campaign.paused")).one()
        assert (paused.details["pending"], paused.details["waiting"], paused.details["in_flight"]) == (1, 2, 0)
        # Resuming goes through the publish gate: the steps have had no test send.
        with pytest.raises(CampaignError) as refused:
            publishing.resume(manager(setup), campaign_id, acknowledged=False)
        assert refused.value.code == "not_ready" and refused.value.params["untested"]
        db.session.rollback()
        assert db.session.get(Campaign, campaign_id).status == CampaignStatus.PAUSED
        assert not db.session.scalars(
            select(audit.AuditEvent).where(audit.AuditEvent.action == "campaign.published")
        ).all()


def test_resume_after_a_test_send_is_audited_as_resumed_never_as_a_second_publish(app, setup):
    from portal.campaigns.models import TestSend

    with app.app_context():
        campaign_id, steps = nurture(setup)
        start(campaign_id, CampaignStatus.PAUSED)
        for key in ("first", "opened", "last"):
            db.session.add(
                TestSend(campaign_id=campaign_id, step_id=steps[key], status="sent",
                         content_version_id=setup["approved"], recipient="wang@example.com")
            )  # fmt: skip
        db.session.commit()
        publishing.resume(manager(setup), campaign_id, acknowledged=False)
        assert db.session.get(Campaign, campaign_id).status == CampaignStatus.SCHEDULED
        actions = list(
            db.session.scalars(select(audit.AuditEvent.action).where(audit.AuditEvent.action.like("campaign.%")))
        )
        assert "campaign.resumed" in actions and "campaign.published" not in actions
