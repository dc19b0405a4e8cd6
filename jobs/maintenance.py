"""Housekeeping jobs."""

from __future__ import annotations

import logging
import smtplib
import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import text

from jobs.tracking import tracked
from portal.extensions import db
from portal.queue import JobRun, redis_connection

log = logging.getLogger(__name__)


def run_diagnostics(job_run_id: int | None = None) -> str:
    """Check, from the worker's side, that it reaches the database, Redis and the SMTP server,
    and how long each takes; the result is written on the JobRun."""
    with tracked(job_run_id) as progress:
        checks: list[dict] = []

        def timed(name: str, check) -> None:
            started = time.perf_counter()
            try:
                check()
            except OSError as exc:
                log.warning("diagnostics: %s not reachable: %s", name, exc)
                checks.append({"name": name, "ok": False})
            else:
                checks.append({"name": name, "ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)})
            progress.update(33 * len(checks), "checks", checks=checks)

        timed("database", lambda: db.session.execute(text("SELECT 1")))
        timed("redis", lambda: redis_connection().ping())
        url = urlsplit(current_app.config["SMTP_URL"])

        def smtp_noop() -> None:
            with smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 25, timeout=5) as smtp:
                smtp.noop()

        timed("smtp", smtp_noop)
        summary = ", ".join(f"{c['name']}: {'ok' if c['ok'] else 'unreachable'}" for c in checks)
        if job_run_id is not None:
            db.session.get(JobRun, job_run_id).result_ref = "diagnostics"
            db.session.commit()
        return summary


def fail_abandoned_job_runs(grace_seconds: int = 120) -> int:
    """Close JobRun rows whose RQ job is gone (Redis flushed) or failed outside the job body
    (killed worker, timeout), so that no progress bar waits forever. Returns how many."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.job import JobStatus as RQStatus
    from sqlalchemy import select

    from portal.models_base import utcnow
    from portal.queue import JobStatus

    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    open_runs = db.session.scalars(
        select(JobRun).where(JobRun.status.in_([JobStatus.QUEUED, JobStatus.STARTED]), JobRun.created_at < cutoff)
    )
    closed = 0
    for run in open_runs:
        try:
            rq_status = Job.fetch(run.rq_job_id or "", connection=redis_connection()).get_status()
        except NoSuchJobError:
            rq_status = None
        if rq_status in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, None):
            run.status = JobStatus.FAILED
            run.finished_at = utcnow()
            run.message = (run.message + "\n" if run.message else "") + (
                "The job stopped without finishing (worker stopped or queue reset). Start it again."
            )
            closed += 1
    db.session.commit()
    return closed


def purge_expired_audit_events() -> int:
    """Delete audit events older than AUDIT_RETENTION_DAYS (the only deletion of audit
    events there is). Returns how many."""
    from sqlalchemy import delete

    from portal.audit import AuditEvent
    from portal.models_base import utcnow

    cutoff = utcnow() - timedelta(days=current_app.config["AUDIT_RETENTION_DAYS"])
    result = db.session.execute(delete(AuditEvent).where(AuditEvent.created_at < cutoff))
    db.session.commit()
    return result.rowcount or 0


def purge_expired_sessions() -> int:
    """Drop sessions past their idle or absolute lifetime."""
    from portal.auth.sessions import purge_expired_sessions as purge

    return purge(current_app.config["SESSION_IDLE_MINUTES"], current_app.config["SESSION_ABSOLUTE_HOURS"])
