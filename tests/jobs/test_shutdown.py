"""Workers that stop cleanly on SIGTERM (a deploy, a scale-down), with real
`python -m jobs.worker` processes, a real Redis and a real SMTP server: SIGTERM to the worker,
to its work horse, or to both (systemd's KillMode=control-group), in the middle of a send and
of a long job."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from jobs.shutdown import STOP_GRACE_SECONDS, WORKER_STOP_SECONDS
from portal.campaigns.models import CampaignStatus
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db
from portal.queue import QUEUES, JobRun, JobStatus, enqueue
from tests import factories
from tests.pipeline import campaign_status, children, emails, new_campaign, received_by, ticking, wait_for

# A lease far longer than the test: any row left leased would hold the campaign up visibly.
LONG_LEASE = {"DELIVERY_LEASE_SECONDS": "300"}


@pytest.fixture
def team(app, app_ctx, make_user):
    return factories.people(make_user)


def _horse_of(worker) -> int:
    """The work horse of a busy worker: its child in a process group of its own."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in children(worker.pid):
            try:
                group = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, ValueError, IndexError):
                continue
            if group == pid:
                return pid
        time.sleep(0.05)
    raise AssertionError("the worker has no work horse")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _leased_to(pid: int) -> int:
    """Rows still claimed by a sender of process `pid` (owners are host:pid:nonce)."""
    db.session.expire_all()
    owners = db.session.scalars(select(Delivery.lease_owner).where(Delivery.status == DeliveryStatus.SENDING)).all()
    db.session.commit()
    return sum(1 for owner in owners if owner and owner.split(":")[1] == str(pid))


def _failed_jobs(app) -> list[str]:
    connection = app.extensions["redis"]
    return [job for queue in QUEUES for job in FailedJobRegistry(queue, connection=connection).get_job_ids()]


def _stop(worker, horse: int, target: str) -> None:
    if target in ("horse", "both"):
        os.kill(horse, signal.SIGTERM)
    if target in ("worker", "both"):
        os.kill(worker.pid, signal.SIGTERM)


@pytest.mark.parametrize("target", ["worker", "horse", "both"])
def test_sigterm_mid_send_loses_nothing_repeats_nothing_and_leaves_no_lease(
    app, app_ctx, smtp, team, start_worker, target
):
    campaign_id, ids = new_campaign(team, 6_000)
    worker = start_worker("sending", extra_env=LONG_LEASE)
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 1_000, 60, "1,000 messages")
        horse = _horse_of(worker)
        _stop(worker, horse, target)
        asked = time.monotonic()
        wait_for(lambda: not _alive(horse), WORKER_STOP_SECONDS, "the sender to stop")
        horse_stopped_in = time.monotonic() - asked
        if target != "horse":
            worker.wait(timeout=WORKER_STOP_SECONDS)
            worker_stopped_in = time.monotonic() - asked
            assert worker.returncode == 0
            # Within the documented stop timeout, which is shorter than a sender's job (30 s).
            assert worker_stopped_in < WORKER_STOP_SECONDS < app.config["SENDER_JOB_SECONDS"], worker_stopped_in
        # The chunk in flight was recorded and the rest of the claim given back at once.
        assert _leased_to(horse) == 0
        stopped_at = len(smtp.messages)
        if target != "horse":
            start_worker("sending", extra_env=LONG_LEASE)  # the new release
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 90, "the campaign to complete")
    assert horse_stopped_in < WORKER_STOP_SECONDS, horse_stopped_in
    assert stopped_at < 6_000  # the stop came in the middle of the send
    received = received_by(smtp)
    assert set(received) == emails(ids)  # none lost
    assert max(received.values()) == 1  # none twice
    assert _failed_jobs(app) == []


def test_rolling_restart_of_every_worker_and_horse_mid_send_costs_nothing(app, app_ctx, smtp, team, start_worker):
    campaign_id, ids = new_campaign(team, 8_000)
    old = [start_worker("sending", extra_env=LONG_LEASE) for _ in range(2)]
    with ticking(app):
        wait_for(lambda: len(smtp.messages) >= 1_500, 60, "1,500 messages")
        horses = [_horse_of(worker) for worker in old]
        asked = time.monotonic()
        for worker, horse in zip(old, horses, strict=True):
            _stop(worker, horse, "both")  # as systemd's control-group stop does
        for _ in old:  # the new release starts beside the old one
            start_worker("sending", extra_env=LONG_LEASE)
        for worker in old:
            worker.wait(timeout=WORKER_STOP_SECONDS)
        stopped_in = time.monotonic() - asked
        assert all(_leased_to(horse) == 0 for horse in horses)
        wait_for(lambda: campaign_status(campaign_id) == CampaignStatus.COMPLETED, 90, "the campaign to complete")
    assert stopped_in < WORKER_STOP_SECONDS, stopped_in
    received = received_by(smtp)
    assert set(received) == emails(ids)
    assert max(received.values()) == 1
    assert _failed_jobs(app) == []


def _run(job_run_id: int) -> JobRun:
    db.session.expire_all()
    run = db.session.get(JobRun, job_run_id)
    db.session.commit()
    return run


def test_long_job_stopped_by_a_deploy_is_resumed_on_another_worker_and_says_so(
    app, app_ctx, start_worker, client, login_as
):
    from portal.auth.models import User

    analyst = db.session.get(User, login_as("data_analyst"))
    run = enqueue("tests.jobs.slow_jobs.report_progress_slowly", 4, kind="report", actor=analyst)
    worker = start_worker("default")
    wait_for(lambda: _run(run.id).status == JobStatus.STARTED and _run(run.id).progress > 0, 30, "the job to start")
    _stop(worker, _horse_of(worker), "worker")
    asked = time.monotonic()
    worker.wait(timeout=WORKER_STOP_SECONDS)
    assert time.monotonic() - asked < 5  # stopped at its next progress update
    stopped = _run(run.id)
    assert stopped.status == JobStatus.QUEUED and stopped.interruptions == 1
    start_worker("default")
    wait_for(lambda: _run(run.id).done, 60, "the resumed job to finish")
    finished = _run(run.id)
    assert finished.status == JobStatus.FINISHED and finished.interruptions == 1
    assert _failed_jobs(app) == []
    page = client.get(f"/jobs/{run.id}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "后台进程重启中断过此任务 1 次" in page


def test_job_that_never_reaches_a_checkpoint_is_interrupted_within_the_stop_timeout(app, app_ctx, start_worker):
    run = enqueue("tests.jobs.slow_jobs.sleep_without_progress", 120, kind="report")
    worker = start_worker("default")
    wait_for(lambda: _run(run.id).status == JobStatus.STARTED, 30, "the job to start")
    horse = _horse_of(worker)
    _stop(worker, horse, "both")
    asked = time.monotonic()
    worker.wait(timeout=WORKER_STOP_SECONDS + 5)
    stopped_in = time.monotonic() - asked
    assert STOP_GRACE_SECONDS <= stopped_in < WORKER_STOP_SECONDS, stopped_in
    assert _run(run.id).status == JobStatus.QUEUED
    start_worker("default")
    wait_for(lambda: _run(run.id).done, 60, "the resumed job to finish")
    assert _run(run.id).status == JobStatus.FINISHED
    assert _failed_jobs(app) == []
