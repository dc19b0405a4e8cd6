"""Exporting a segment's contacts (CSV or XLSX): a high-risk action, built by a worker."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from portal import audit, storage
from portal.access import Permission, check_step_up
from portal.audience.importing import neutralise
from portal.audience.models import Contact, Segment
from portal.audience.segments import segment_query
from portal.extensions import db
from portal.queue import JobRun, enqueue
from portal.refusals import Refusal

COLUMNS = (
    "id",
    "email",
    "mobile",
    "name",
    "company",
    "industry",
    "province",
    "city",
    "company_size",
    "score",
    "lifecycle_stage",
    "created_at",
)


class ExportRefused(Refusal, PermissionError):
    messages = {
        "may_not_export": _l("You may not export contacts."),
        "format": _l("Choose CSV or XLSX."),
        "no_such_segment": _l("No such segment."),
        "no_such_export": _l("No such export."),
    }


AREA = "exports"  # the storage area of export files
MIMETYPES = {"csv": "text/csv", "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def start_export(actor: Any, segment_id: int, file_format: str, step_up_at: datetime | None) -> JobRun:
    """High risk: needs the bulk-export permission and a recently confirmed second factor (`check_step_up`)."""
    if not actor.can(Permission.AUDIENCE_BULK_EXPORT):
        raise ExportRefused("may_not_export")
    check_step_up(step_up_at)
    if file_format not in ("csv", "xlsx"):
        raise ExportRefused("format")
    segment = db.session.get(Segment, segment_id)
    if segment is None:
        raise ExportRefused("no_such_segment")
    audit.record(actor, "segment.exported", f"segment:{segment.id}", {"format": file_format, "name": segment.name})
    db.session.commit()
    return enqueue(
        "jobs.audience.export_segment",
        segment_id,
        file_format,
        kind="export",
        actor=actor,
        queue="reports",
        timeout=3600,
    )


def write_export(
    segment_id: int, file_format: str, job_run_id: int | None, progress: Callable[[int, str], None]
) -> str:
    """Stream the segment's contacts into a file; returns its name under exports/."""
    ids = segment_query(segment_id)
    total = db.session.scalar(select(func.count()).select_from(ids.subquery())) or 1
    rows = db.session.execute(
        select(*(getattr(Contact, c) for c in COLUMNS))
        .where(Contact.id.in_(ids))
        .order_by(Contact.id)
        .execution_options(yield_per=5000)
    )
    name = f"segment-{segment_id}-{job_run_id or 'x'}.{file_format}"

    with storage.writing(AREA, name) as path:
        if file_format == "csv":
            with open(path, "w", encoding="utf-8-sig", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(COLUMNS)
                for number, row in enumerate(rows, start=1):
                    writer.writerow([neutralise(v) if isinstance(v, str) else _plain(v) for v in row])
                    if number % 5000 == 0:
                        progress(min(99, 100 * number // total), f"{number} / {total}")
        else:
            from openpyxl import Workbook

            workbook = Workbook(write_only=True)
            sheet = workbook.create_sheet("contacts")
            sheet.append(list(COLUMNS))
            for number, row in enumerate(rows, start=1):
                sheet.append([text_cell(sheet, v) if isinstance(v, str) else _plain(v) for v in row])
                if number % 5000 == 0:
                    progress(min(99, 100 * number // total), f"{number} / {total}")
            workbook.save(path)
    return name


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def text_cell(sheet: Any, value: str) -> Any:
    """An XLSX cell that holds `value` as text: never run as a formula (so no `'` is needed,
    and +86 numbers stay as they are), without the control characters XLSX cannot hold."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    cell = WriteOnlyCell(sheet, ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"
    return cell


def export_file_for(actor: Any, job_run_id: int) -> tuple[Iterator[bytes], str, str]:
    """(the file's bytes in chunks, its name, mimetype). Only the person who started an
    export may download it."""
    run = db.session.get(JobRun, job_run_id)
    if run is None or run.kind != "export" or run.created_by_id != actor.id or not run.result_ref:
        raise ExportRefused("no_such_export")
    try:
        chunks = storage.open_stream(AREA, run.result_ref)
    except FileNotFoundError:
        raise ExportRefused("no_such_export") from None
    audit.record(actor, "export.downloaded", f"job:{run.id}", {"file": run.result_ref})
    db.session.commit()
    extension = run.result_ref.rpartition(".")[2]
    return chunks, run.result_ref, MIMETYPES.get(extension, "application/octet-stream")
