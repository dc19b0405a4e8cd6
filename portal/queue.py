"""Queues, the JobRun record, and `enqueue`: the one way the portal starts background work.

The portal names jobs by their dotted path ("jobs.maintenance.run_diagnostics") so that it
never imports the worker code. Every job a person starts gets a JobRun row; the UI reads that
row, never Redis, so nothing depends on RQ's result lifetimes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from rq import Queue, Retry
from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.models_base import UTCDateTime, utcnow

# The campaign tick has a queue of its own, served by a worker of its own in production, so
# that it never waits behind senders (each of which runs for SENDER_JOB_SECONDS).
TICK_QUEUE = "campaign-tick"
DEFAULT_QUEUE = "default"
SENDING_QUEUE = "sending"
REPORTS_QUEUE = "reports"
# Worker listening order: the tick, then sends, so that a big report never delays a campaign.
QUEUES = (TICK_QUEUE, SENDING_QUEUE, DEFAULT_QUEUE, REPORTS_QUEUE)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in (JobStatus.FINISHED, JobStatus.FAILED)


class JobRun(db.Model):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    job_name: Mapped[str] = mapped_column(String(128))
    queue: Mapped[str] = mapped_column(String(32))
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    # What the job produced: a file name under STORAGE_DIR, an id, or a short summary.
    result_ref: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # How often a worker's stop interrupted the job, which was then resumed on another worker.
    interruptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    @property
    def done(self) -> bool:
        return JobStatus(self.status).done


def redis_connection() -> Redis:
    """The app's Redis client (one pool per process, made by create_app)."""
    return current_app.extensions["redis"]


def get_queue(name: str) -> Queue:
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=redis_connection())


def enqueue(
    job_name: str,
    *args: Any,
    kind: str,
    actor: Any = None,
    queue: str = DEFAULT_QUEUE,
    timeout: int = 600,
    retries: int = 0,
    retry_intervals: list[int] | None = None,
    track: bool = True,
    **kwargs: Any,
) -> JobRun | None:
    """Enqueue `job_name` with explicit timeout and retries.

    With `track` (the default for work a person starts) a JobRun row is committed first and
    its id passed to the job as `job_run_id`; the job reports progress on that row."""
    run = None
    if track:
        run = JobRun(kind=kind, job_name=job_name, queue=queue, created_by_id=getattr(actor, "id", None))
        db.session.add(run)
        db.session.commit()  # the worker may pick the job up before this request ends
        kwargs["job_run_id"] = run.id
    retry = Retry(max=retries, interval=retry_intervals or [10, 60, 300][:retries]) if retries else None
    job = get_queue(queue).enqueue(
        job_name,
        *args,
        job_timeout=timeout,
        retry=retry,
        result_ttl=3600,
        failure_ttl=7 * 24 * 3600,
        **kwargs,
    )
    if run is not None:
        run.rq_job_id = job.id
        db.session.commit()
    return run
