"""Report a job's life on its JobRun row: started, progress, finished or failed, or stopped
for a worker's restart and queued again."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from jobs import shutdown
from portal.extensions import db
from portal.models_base import utcnow
from portal.queue import JobRun, JobStatus

log = logging.getLogger(__name__)


def job_message(code: str, **figures: Any) -> str:
    """What a JobRun's message column holds: a code and its figures, as JSON."""
    return json.dumps({"code": code, **figures})


class Progress:
    def __init__(self, job_run_id: int | None):
        self.job_run_id = job_run_id

    def update(self, percent: int, message: str | None = None, **figures: Any) -> None:
        """Commit progress so the polling page sees it at once. Also the job's checkpoint:
        when the worker is stopping, raises ShutdownRequested (see `tracked`).

        `message` is a code of `portal.labels.JOB_MESSAGES` and `figures` its parameters:
        the page makes the sentence in the reader's language."""
        shutdown.checkpoint()
        run = self._run()
        if run is None:
            return
        run.progress = max(0, min(100, int(percent)))
        if message is not None:
            run.message = job_message(message, **figures)
        db.session.commit()

    def _run(self) -> JobRun | None:
        return db.session.get(JobRun, self.job_run_id) if self.job_run_id else None


@contextlib.contextmanager
def tracked(job_run_id: int | None) -> Iterator[Progress]:
    """Mark the JobRun started, and finished or failed when the block ends.

    A failure rolls back the job's own work, records the error, and re-raises so that RQ
    applies the job's retry policy. A stop for a worker's restart rolls back the job's own
    work too, queues the job again with the same arguments (jobs are idempotent, so the next
    run picks up from what was committed) and ends this run quietly: the JobRun counts the
    interruption and stays open for the run that resumes it."""
    progress = Progress(job_run_id)
    run = progress._run()
    if run is not None:
        run.status = JobStatus.STARTED
        run.started_at = run.started_at or utcnow()
        db.session.commit()
    try:
        yield progress
    except shutdown.ShutdownRequested:
        db.session.rollback()
        if not _queue_again(progress._run()):
            raise
        return
    except Exception as exc:
        db.session.rollback()
        run = progress._run()
        if run is not None:
            run.status = JobStatus.FAILED
            run.message = f"{type(exc).__name__}: {exc}"[:2000]
            run.finished_at = utcnow()
            db.session.commit()
        raise
    run = progress._run()
    if run is not None:
        run.status = JobStatus.FINISHED
        run.progress = 100
        run.finished_at = utcnow()
        db.session.commit()


def _queue_again(run: JobRun | None) -> bool:
    """Enqueue a copy of the current RQ job on its queue; False outside a worker."""
    from rq import Queue, get_current_job

    job = get_current_job()
    if job is None:
        return False
    copy = Queue(job.origin, connection=job.connection).enqueue(
        job.func_name,
        args=job.args,
        kwargs=job.kwargs,
        job_timeout=job.timeout,
        result_ttl=job.result_ttl,
        failure_ttl=job.failure_ttl,
    )
    if run is not None:
        run.status = JobStatus.QUEUED
        run.interruptions = (run.interruptions or 0) + 1
        run.rq_job_id = copy.id
        db.session.commit()
    log.info("job %s stopped for a worker restart; queued again as %s", job.id, copy.id)
    return True
