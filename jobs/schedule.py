"""Periodic jobs, declared as data, and the process that enqueues them on time.

    python -m jobs.schedule

Run one such process per deployment (make run starts it). Every periodic job is idempotent,
so a second scheduler or a missed tick costs nothing but a repeat."""

from __future__ import annotations

import importlib
import logging
import os
from typing import NamedTuple

from rq.cron import CronScheduler

from jobs.worker import QuietFrequentJobs
from portal import create_app
from portal.queue import DEFAULT_QUEUE, TICK_QUEUE


class PeriodicJob(NamedTuple):
    job_name: str  # dotted path of the job function
    cron: str | None = None  # standard five-field cron expression, in UTC
    queue: str = DEFAULT_QUEUE
    timeout: int = 600
    interval: int | None = None  # seconds between runs, for jobs more frequent than a minute


PERIODIC_JOBS: list[PeriodicJob] = [
    # Pause, resume and new steps take effect within seconds of a change; its own queue (and
    # worker) so that it never waits behind the senders.
    PeriodicJob("jobs.sending.run_campaigns", interval=5, queue=TICK_QUEUE, timeout=300),
    # Opens and clicks reach the database (and the contact's timeline) within seconds.
    PeriodicJob("jobs.sending.write_tracking_events", interval=2, queue=TICK_QUEUE, timeout=300),
    # Internal notices for the WeCom group robot, at its 20 a minute; WeCom mass-send results.
    PeriodicJob("jobs.sending.post_robot_notices", interval=10, timeout=120),
    PeriodicJob("jobs.sending.collect_wecom_results", "* * * * *", timeout=300),
    PeriodicJob("jobs.audience.sync_wecom_customers", "37 1 * * *", timeout=1800),
    PeriodicJob("jobs.maintenance.fail_abandoned_job_runs", "*/5 * * * *", timeout=120),
    PeriodicJob("jobs.maintenance.purge_expired_sessions", "17 * * * *", timeout=300),
    PeriodicJob("jobs.maintenance.purge_expired_audit_events", "41 3 * * *", timeout=1800),
    PeriodicJob("jobs.audience.evaluate_tag_rules", "7 * * * *", timeout=1800),
    PeriodicJob("jobs.audience.recompute_lifecycle_stages", "23 2 * * *", timeout=3600),
    PeriodicJob("jobs.audience.remove_abandoned_uploads", "53 4 * * *", timeout=600),
    PeriodicJob("jobs.reports.run_scheduled_reports", "11 * * * *", queue="reports", timeout=600),
    # Well within REPORT_ROLLUP_MAX_AGE_SECONDS, so pages seldom refresh the rollups themselves.
    PeriodicJob("jobs.reports.refresh_report_rollups", interval=20, queue="reports", timeout=3600),
]


def resolve(job_name: str):
    module_name, _, function_name = job_name.rpartition(".")
    return getattr(importlib.import_module(module_name), function_name)


def build_scheduler(connection) -> CronScheduler:
    scheduler = CronScheduler(connection=connection, logging_level=os.environ.get("LOG_LEVEL", "INFO"))
    for job in PERIODIC_JOBS:
        scheduler.register(
            resolve(job.job_name), job.queue, cron=job.cron, interval=job.interval, job_timeout=job.timeout
        )
    return scheduler


def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    logging.getLogger("rq.cron").addFilter(QuietFrequentJobs())
    app = create_app()
    build_scheduler(app.extensions["redis"]).start()


if __name__ == "__main__":
    main()
