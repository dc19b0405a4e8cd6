"""The sentences of the contact import, in the reader's language: what the services refuse with
(codes and parameters) and every problem of a rejected row, made where they are shown."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from portal import labels
from portal.audience import importing
from portal.audience.models import ImportJob

# One list of field labels for the whole portal (the contact pages use it too).
FIELD_LABELS = labels.IMPORT_FIELDS
CHANNEL_LABELS = {"email": _l("Email consent"), "sms": _l("SMS consent"), "wecom": _l("WeCom consent")}
ENCODING_LABELS = {
    "utf-8": "UTF-8",
    "utf-8-sig": _l("UTF-8 (with BOM)"),
    "gb18030": _l("GB18030 (GBK, Simplified Chinese)"),
    "big5": _l("Big5 (Traditional Chinese)"),
    "utf-16": _l('UTF-16 ("Unicode text")'),
    "utf-16-le": _l('UTF-16 ("Unicode text")'),
    "utf-16-be": _l('UTF-16 ("Unicode text")'),
}
STATUS_LABELS = {
    "uploaded": _l("Waiting for the column mapping"),
    "queued": _l("Queued"),
    "running": _l("Importing"),
    "done": _l("Done"),
    "failed": _l("Failed"),
}


def field_label(name: str) -> str:
    if name.startswith("attr:"):
        return _("custom attribute %(name)s", name=name[5:])
    return str(FIELD_LABELS.get(name, name))


def encoding_label(name: str) -> str:
    return str(ENCODING_LABELS.get(name, name.upper()))


def refusal(exc: importing.ImportRefused) -> str:
    """The sentence for a refused upload, choice or import."""
    return refusal_sentence(exc.code, exc.params)


def refusal_sentence(code: str, params: dict[str, Any]) -> str:
    if code == "too_large":
        return _("The file is larger than %(megabytes)s MB.", megabytes=params["megabytes"])
    if code == "empty":
        return _("The file is empty: no row holds any text.")
    if code == "legacy_xls":
        return _("This is an old Excel (.xls) workbook, which cannot be read: please save it as CSV or XLSX.")
    if code == "not_a_table":
        return _("This file is not a table (CSV, text or XLSX); please upload the contacts as CSV or XLSX.")
    if code == "file_damaged":
        return _("The file is damaged or incomplete; please save it again from Excel or WPS and upload it.")
    if code == "undecodable":
        return _(
            "Row %(row)s contains bytes that are not %(encoding)s text: choose another encoding, "
            "or save the file again as UTF-8.",
            row=params.get("row") or "?",
            encoding=encoding_label(params.get("encoding", "")),
        )
    if code == "unknown_encoding":
        return _("Choose one of the encodings offered.")
    if code == "already_started":
        return _("This import has already been started.")
    if code == "no_contact_column":
        return _("Map at least one column to email or mobile.")
    if code == "field_twice":
        fields = "、".join(field_label(f) for f in params.get("fields", []))
        return _("Each field can come from one column only: %(fields)s", fields=fields)
    if code == "unknown_fields":
        return _("Unknown fields: %(fields)s", fields="、".join(params.get("fields", [])))
    if code == "choose_policy":
        return _("Choose a merge policy and a default consent.")
    if code == "abandoned":
        return _("The columns were never mapped; the uploaded file was removed after a few days.")
    if code == "not_found":
        return _("No such import.")
    return _("The import stopped because of an internal error; the administrators have the details.")


def failure(job: ImportJob) -> str:
    """Why a failed import stopped, and what it had committed before."""
    reason = refusal_sentence(job.failure or "internal", {"row": job.failure_row, "encoding": job.encoding})
    if job.created or job.updated or job.unchanged or job.merged:
        done = _(
            "Before it stopped, %(created)s contacts were created and %(updated)s updated.",
            created=job.created,
            updated=job.updated,
        )
        return f"{reason} {done}"
    nothing = _("Nothing was changed.")
    return f"{reason} {nothing}"


def problem(code: str, params: dict[str, Any]) -> str:
    """The sentence for one problem of a rejected row."""
    value = params.get("value", "")
    if code == "email_invalid":
        return _("“%(value)s” is not a valid email address", value=value)
    if code == "mobile_invalid":
        return _("“%(value)s” is not a valid mobile number", value=value)
    if code == "mobile_not_mobile":
        return _("“%(value)s” is a landline, not a mobile number", value=value)
    if code == "contact_missing":
        return _("an email or a mobile number is required")
    if code == "consent_unknown":
        return _(
            "%(column)s: “%(value)s” is neither yes nor no",
            column=CHANNEL_LABELS.get(params.get("channel", ""), params.get("channel", "")),
            value=value,
        )
    if code == "too_long":
        return _(
            "%(field)s has %(length)s characters; at most %(limit)s fit",
            field=field_label(params.get("field", "")),
            length=params.get("length"),
            limit=params.get("limit"),
        )
    if code == "extra_cells":
        return _(
            "%(count)s cells beyond the %(width)s columns of the header", count=params["count"], width=params["width"]
        )
    if code == "suppressed":
        return _("this person was erased or must not be contacted")
    if code == "mobile_taken":
        return _("the mobile number belongs to another contact")
    return code


def problems(items: list[list[Any]]) -> str:
    return "；".join(problem(code, params) for code, params in items)


def shown_rejects(job: ImportJob) -> list[tuple[int, str]]:
    """The first rejected rows with their problems as sentences, for the result page."""
    return [(row, problems(items)) for row, items, _cells in importing.rejected_rows(job, importing.SHOWN_REJECTS)]


def report_csv(job: ImportJob) -> Iterator[str]:
    """The downloadable report: each rejected row, its problems in the reader's language, its
    cells (neutralised: the report is opened in spreadsheets)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([_("Row"), _("Problems"), *importing.report_headers(job)])
    yield "\ufeff" + flush()
    for number, (row, items, cells) in enumerate(importing.rejected_rows(job), start=1):
        writer.writerow([row, problems(items), *cells])
        if number % 1000 == 0:
            yield flush()
    yield flush()
