"""Report jobs: build a report's file, and the monthly schedules' periodic run."""

from __future__ import annotations

from jobs.tracking import tracked
from portal.extensions import db
from portal.queue import JobRun


def build_report(report_id: int, job_run_id: int | None = None) -> None:
    """Build one report (PDF, workbook or backup zip). Idempotent: a ready report is kept."""
    from portal.reports.service import build_report_file

    with tracked(job_run_id) as progress:
        report = build_report_file(report_id, progress.update)
        if job_run_id:
            db.session.get(JobRun, job_run_id).result_ref = report.file_name
            db.session.commit()


def run_scheduled_reports() -> list[int]:
    """Periodic: queue last month's report of every schedule whose day has come."""
    from portal.reports.service import run_due_schedules

    return run_due_schedules()


def refresh_report_rollups() -> int:
    """Periodic: count what changed in the ledger into the dashboard's rollups."""
    from portal.reports.rollups import refresh

    return refresh()
