"""The campaign tick never waits behind senders: it has a queue, and a worker, of its own."""

from __future__ import annotations

import time

from rq import Worker
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from jobs.schedule import PERIODIC_JOBS
from portal.campaigns.publishing import kick_runner
from portal.queue import SENDING_QUEUE, TICK_QUEUE
from tests import factories
from tests.pipeline import new_campaign, wait_for


def test_the_tick_is_scheduled_on_its_own_queue():
    (tick,) = [job for job in PERIODIC_JOBS if job.job_name == "jobs.sending.run_campaigns"]
    assert tick.queue == TICK_QUEUE != SENDING_QUEUE


def test_the_tick_runs_at_once_while_every_sender_is_busy(app, app_ctx, smtp, make_user, start_worker):
    from jobs.sending import run_campaigns

    team = factories.people(make_user)
    # 60 a minute: the senders spend the rest of the minute waiting for their allowance.
    new_campaign(team, 300, throttle=60)
    run_campaigns()  # starts the campaign and queues its senders
    start_worker("sending")
    start_worker(TICK_QUEUE)
    connection = app.extensions["redis"]
    busy = StartedJobRegistry(SENDING_QUEUE, connection=connection)
    wait_for(lambda: busy.count > 0 and len(smtp.messages) >= 60, 60, "a sender at work")
    wait_for(lambda: len(Worker.all(connection=connection)) == 2, 30, "both workers to be up")
    done = FinishedJobRegistry(TICK_QUEUE, connection=connection)
    asked = time.monotonic()
    kick_runner()
    wait_for(lambda: done.count > 0, 30, "the tick to run")
    ran_in = time.monotonic() - asked
    assert busy.count > 0  # the sender was still at work all along
    assert ran_in < 5, ran_in  # not after the sender's 30 s
