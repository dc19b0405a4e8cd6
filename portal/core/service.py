"""System status: health of the database, Redis and the workers."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from portal.access import Permission
from portal.extensions import db
from portal.queue import JobRun
from portal.recent import Recent


class JobRunNotVisible(Exception):
    """The job run does not exist, or belongs to someone else and the user may not see others'."""


def visible_job_run(user, job_run_id: int) -> JobRun:
    """The job run, if `user` started it or may watch everyone's jobs."""
    run = db.session.get(JobRun, job_run_id)
    if run is None or (run.created_by_id != user.id and not user.can(Permission.JOBS_VIEW)):
        raise JobRunNotVisible(job_run_id)
    return run


def health(redis: Redis) -> dict[str, Any]:
    """Check each dependency; `ok` is true only when all of them answer."""
    checks: dict[str, dict[str, Any]] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True, "dialect": db.engine.dialect.name}
    except SQLAlchemyError as exc:
        db.session.rollback()
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    try:
        redis.ping()
        checks["redis"] = {"ok": True}
        workers = Worker.all(connection=redis)
        checks["workers"] = {"ok": bool(workers), "count": len(workers)}
    except RedisError as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "count": 0, "error": "redis unreachable"}
    checks["tracking_intake"] = _tracking_intake()
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def _tracking_intake() -> dict[str, Any]:
    """Opens and clicks waiting in the intake: not ok once the oldest has waited longer than
    its writer (every two seconds) ever should, so that monitoring hears of a stopped writer
    before the dashboard's figures fall behind."""
    from portal.delivery import intake

    try:
        waiting, oldest = intake.backlog()
    except (RedisError, SQLAlchemyError) as exc:
        db.session.rollback()
        return {"ok": False, "error": type(exc).__name__}
    late = oldest is not None and oldest > intake.LATE_AFTER_SECONDS
    return {"ok": not late, "waiting": waiting, "oldest_seconds": round(oldest) if oldest is not None else 0}


# The audience counts scan a table that grows to millions of contacts: counted at most once per
# the reports' age limit (and again when contacts' tags change) in each process, so the home
# page costs the same at any size.
_audience_counts = Recent()


def _count_audience() -> tuple[int, int]:
    from sqlalchemy import func, select

    from portal.audience.models import Contact, ContactTag, Tag

    contacts = db.session.scalar(select(func.count()).select_from(Contact)) or 0
    mqls = (
        db.session.scalar(
            select(func.count()).select_from(ContactTag).join(Tag, Tag.id == ContactTag.tag_id).where(Tag.name == "MQL")
        )
        or 0
    )
    return contacts, mqls


def overview(user) -> dict[str, Any]:
    """The dashboard's figures, each only for people allowed to see its area."""
    from sqlalchemy import func, select

    from portal.audience.models import ImportJob
    from portal.content.models import AssetVersion, VersionStatus

    figures: dict[str, Any] = {}
    if user.can(Permission.AUDIENCE_VIEW):
        from portal.reports import rollups

        # A change to contacts' tags or messages gives the rollups a new generation: counted again.
        _as_of, generation = rollups.fresh_state()
        at, (figures["contacts"], figures["mqls"]) = _audience_counts.get(
            str(db.engine.url), _count_audience, rollups.max_age(), generation
        )
        figures["counted_at"] = at
        figures["recent_imports"] = list(db.session.scalars(select(ImportJob).order_by(ImportJob.id.desc()).limit(3)))
    if user.can(Permission.CONTENT_VIEW):
        figures["approved"] = (
            db.session.scalar(
                select(func.count()).select_from(AssetVersion).where(AssetVersion.status == VersionStatus.APPROVED)
            )
            or 0
        )
    if user.can(Permission.CONTENT_REVIEW) or user.can(Permission.CONTENT_EDIT):
        figures["in_review"] = (
            db.session.scalar(
                select(func.count()).select_from(AssetVersion).where(AssetVersion.status == VersionStatus.IN_REVIEW)
            )
            or 0
        )
    return figures
