"""Audience jobs: imports, tag rules, lifecycle stages, exports."""

from __future__ import annotations

from jobs.tracking import tracked
from portal.extensions import db
from portal.queue import JobRun, redis_connection


def run_import(import_id: int, job_run_id: int | None = None) -> None:
    from portal.audience.importing import ImportFailed
    from portal.audience.importing import run_import as import_file

    with tracked(job_run_id) as progress:
        job = import_file(import_id, progress=progress.update)
        if job.status == "failed":
            # The import page says why in plain words; the run is marked failed too.
            raise ImportFailed(job.failure)
        # The import's page tells the outcome in the reader's language; the run keeps figures only.
        progress.update(100, "rows", done=job.rows, total=job.rows)
        if job_run_id:
            db.session.get(JobRun, job_run_id).result_ref = f"import:{job.id}"
            db.session.commit()


def evaluate_tag_rules() -> dict:
    """Periodic, and after contacts or events change. Idempotent."""
    from portal.audience.tag_rules import PENDING_KEY, evaluate_all

    redis_connection().delete(PENDING_KEY)
    return evaluate_all()


def recompute_lifecycle_stages() -> int:
    from portal.audience.lifecycle import recompute_stages

    return recompute_stages()


def remove_abandoned_uploads() -> int:
    """Daily: the uploads of imports nobody confirmed within a week. Idempotent."""
    from portal.audience.importing import remove_abandoned_uploads as remove

    return remove()


def export_segment(segment_id: int, file_format: str, job_run_id: int | None = None) -> None:
    from portal.audience.export import write_export

    with tracked(job_run_id) as progress:
        name = write_export(segment_id, file_format, job_run_id, progress.update)
        db.session.get(JobRun, job_run_id).result_ref = name
        db.session.commit()


def sync_wecom_customers() -> dict[str, int]:
    """Link contacts to their WeCom customer ids and owning employees from the external-contact
    list (periodic; portal/delivery/wecom_tasks.py). Nothing to do when WeCom is off."""
    from flask import current_app

    from portal.delivery.channels.wecom_customer import WeComCustomerApi
    from portal.delivery.wecom_tasks import sync_customers

    config = current_app.config
    if not config["WECOM_CORP_ID"] or not config["WECOM_CONTACT_SECRET"]:
        return {"customers": 0, "linked": 0}
    with WeComCustomerApi.from_config(config, redis=redis_connection()) as api:
        return sync_customers(api)
