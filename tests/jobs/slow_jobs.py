"""Jobs that take their time, for the tests of stopping workers (run by real workers, which
import them by name like any job)."""

from __future__ import annotations

import time

from jobs.tracking import tracked
from portal.extensions import db
from portal.queue import JobRun


def report_progress_slowly(seconds: float, job_run_id: int | None = None) -> None:
    """Reports progress ten times a second for `seconds`, as an import or a report build does."""
    with tracked(job_run_id) as progress:
        steps = int(seconds * 10)
        for step in range(steps):
            time.sleep(0.1)
            progress.update(100 * step // steps)


def sleep_without_progress(seconds: float, job_run_id: int | None = None) -> None:
    """One long step with no progress update; once resumed (its JobRun counts an interruption)
    it has nothing left to do, as a job resuming from its checkpoint."""
    with tracked(job_run_id):
        if db.session.get(JobRun, job_run_id).interruptions:
            return
        time.sleep(seconds)
