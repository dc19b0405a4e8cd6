"""The worker process: one Flask app per process, then RQ's worker loop.

    python -m jobs.worker [--burst] [queue ...]

Each job runs in a forked work horse inside the app context; the horse drops the database
connections it inherited from the parent so that the two never share a socket.

On SIGTERM (a deploy, a scale-down) the worker takes no new job and tells its horse to stop
(see jobs/shutdown.py): the worker is gone within WORKER_STOP_SECONDS, its job either finished
or queued again, never in RQ's failed registry."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal

from rq import Queue, Worker

from jobs import shutdown
from portal import create_app
from portal.extensions import db
from portal.queue import QUEUES


class QuietFrequentJobs(logging.Filter):
    """Drops the INFO lines RQ writes for every run of the jobs that run every few seconds
    (the campaign tick), and its two generic lines after every job ("Job OK", "result is
    kept"), which would otherwise bury every other line of the log. Each job's start line,
    and every warning and error, still show."""

    FREQUENT = ("run_campaigns", "write_tracking_events", ": Job OK (", "result is kept for")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not any(name in record.getMessage() for name in self.FREQUENT)


class PortalWorker(Worker):
    """An RQ worker whose jobs run inside the portal's app context."""

    def __init__(self, *args, app=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.app = app

    def setup_work_horse_signals(self):
        super().setup_work_horse_signals()
        shutdown.install()

    def handle_warm_shutdown_request(self):
        # RQ would wait for the job to end (a sender: up to SENDER_JOB_SECONDS); ask it to stop.
        super().handle_warm_shutdown_request()
        if self.horse_pid:
            with contextlib.suppress(ProcessLookupError):  # the horse has just finished
                os.kill(self.horse_pid, signal.SIGTERM)

    def main_work_horse(self, job, queue):
        # The work horse is a fork: use fresh database connections, never the parent's.
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)

    def perform_job(self, job, queue):
        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a portal background worker.")
    parser.add_argument("queues", nargs="*", default=list(QUEUES))
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)

    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    logging.getLogger("rq.worker").addFilter(QuietFrequentJobs())
    app = create_app()
    with app.app_context():
        connection = app.extensions["redis"]
        queues = [Queue(name, connection=connection) for name in args.queues]
        worker = PortalWorker(queues, connection=connection, name=args.name, app=app)
        worker.work(burst=args.burst, with_scheduler=True, logging_level=os.environ.get("LOG_LEVEL", "INFO"))


if __name__ == "__main__":
    main()
