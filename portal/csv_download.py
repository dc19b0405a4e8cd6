"""CSV files people open in Excel: UTF-8 with a BOM, formula-looking cells made plain text,
streamed row by row so that a large export never sits in memory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from flask import Response, stream_with_context


def plain_cell(value: object) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start like a formula: make them plain text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_response(headers: Iterable[object], rows: Iterable[Iterable[object]], filename: str) -> Response:
    def lines():
        buffer = io.StringIO()
        buffer.write("\ufeff")  # without it Excel reads UTF-8 as the local code page
        writer = csv.writer(buffer)
        writer.writerow([str(h) for h in headers])
        for row in rows:
            writer.writerow([plain_cell(v) for v in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    return Response(
        stream_with_context(lines()),
        mimetype="text/csv; charset=utf-8",
        headers={"Content-Disposition": f"attachment; filename={filename}"},
    )
