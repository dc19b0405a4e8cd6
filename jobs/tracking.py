"""Report a job's life on its JobRun row: started, progress, finished or failed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from portal.extensions import db
from portal.models_base import utcnow
from portal.queue import JobRun, JobStatus


class Progress:
    def __init__(self, job_run_id: int | None):
        self.job_run_id = job_run_id

    def update(self, percent: int, message: str | None = None) -> None:
        """Commit progress so the polling page sees it at once."""
        run = self._run()
        if run is None:
            return
        run.progress = max(0, min(100, int(percent)))
        if message is not None:
            run.message = message
        db.session.commit()

    def _run(self) -> JobRun | None:
        return db.session.get(JobRun, self.job_run_id) if self.job_run_id else None


@contextlib.contextmanager
def tracked(job_run_id: int | None) -> Iterator[Progress]:
    """Mark the JobRun started, and finished or failed when the block ends.

    A failure rolls back the job's own work, records the error, and re-raises so that RQ
    applies the job's retry policy."""
    progress = Progress(job_run_id)
    run = progress._run()
    if run is not None:
        run.status = JobStatus.STARTED
        run.started_at = run.started_at or utcnow()
        db.session.commit()
    try:
        yield progress
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
