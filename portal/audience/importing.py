"""Importing contacts from CSV and XLSX: streamed, validated row by row, de-duplicated by
email then mobile (inside the file and against the database), merged by the chosen policy.

Nothing is lost silently: every row ends created, updated, unchanged, merged into a row above
it, rejected (with every problem it has, in the downloadable report) or blank, and those add up
to the rows in the file. Every value is checked against what its column holds before any row
reaches the database, the same way on every database. Writes go in batches of set-based
statements."""

from __future__ import annotations

import csv
import json
import logging
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Integer, String, any_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql

from portal import audit, storage
from portal.access import Permission
from portal.audience import normalise
from portal.audience.importing_files import (
    ENCODING_CHOICES,
    ImportRefused,
    TableFormat,
    encoding_for,
    estimate_rows,
    file_kind,
    first_undecodable_line,
    is_blank,
    read_header,
    table_format,
)
from portal.audience.importing_files import iter_rows as iter_file_rows
from portal.audience.models import (
    Channel,
    ConsentStatus,
    Contact,
    ContactConsent,
    ContactTag,
    ImportJob,
    Suppression,
)
from portal.extensions import db
from portal.models_base import utcnow

log = logging.getLogger(__name__)
BATCH_SIZE = 2000
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# Uploads never confirmed are removed after this many days (maintenance job).
ABANDONED_AFTER_DAYS = 7
# Rejected rows shown on the result page; the downloadable report has them all.
SHOWN_REJECTS = 100
CONTACT_FIELDS = (
    "email",
    "mobile",
    "name",
    "company",
    "industry",
    "province",
    "city",
    "company_size",
    "wecom_external_userid",
    "wecom_owner_userid",
)
IMPORT_FIELDS = (*CONTACT_FIELDS, "consent_email", "consent_sms", "consent_wecom", "tags")
# The longest value each field holds (the columns' lengths); an attribute or a tag the same way.
FIELD_LIMITS = {name: Contact.__table__.c[name].type.length for name in CONTACT_FIELDS}
ATTRIBUTE_LIMIT = 1000
# The fields whose length is checked here (an email or a mobile too long is invalid anyway),
# and the shortest limit among them (company size, 32): a row with no longer cell skips the
# check. Normalising only lengthens a province, by at most 6 characters (新疆 -> 新疆维吾尔自治区),
# far within its 50.
TEXT_FIELDS = tuple(f for f in CONTACT_FIELDS if f not in ("email", "mobile"))
_SHORTEST_LIMIT = min(FIELD_LIMITS[name] for name in TEXT_FIELDS)
_TAG_SEPARATORS = re.compile(r"[,，;；、]")
TAG_LIMIT = 100
# Control characters other than tab and line breaks: invisible, and an XLSX cannot hold them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Header text (lower-cased) -> field. Chinese and English, as exported by common CRMs and Excel.
HEADER_ALIASES = {
    **dict.fromkeys(("email", "e-mail", "mail", "email address", "邮箱", "电子邮箱", "电子邮件", "邮件"), "email"),
    **dict.fromkeys(("邮箱地址", "电子邮件地址"), "email"),
    **dict.fromkeys(("mobile", "phone", "mobile phone", "cell phone", "手机", "手机号", "手机号码"), "mobile"),
    **dict.fromkeys(("电话", "移动电话", "联系电话"), "mobile"),
    **dict.fromkeys(("name", "full name", "contact", "姓名", "名字", "联系人", "客户姓名"), "name"),
    **dict.fromkeys(("company", "company name", "account", "公司", "公司名称", "企业", "企业名称"), "company"),
    **dict.fromkeys(("单位", "工作单位"), "company"),
    **dict.fromkeys(("industry", "行业", "所属行业"), "industry"),
    **dict.fromkeys(("province", "state", "省份", "省", "地区", "所在省份"), "province"),
    **dict.fromkeys(("city", "城市", "市", "所在城市"), "city"),
    **dict.fromkeys(("company size", "company_size", "employees", "规模", "公司规模"), "company_size"),
    **dict.fromkeys(("企业规模", "人数", "员工人数"), "company_size"),
    **dict.fromkeys(("consent", "email consent", "opt-in", "opt in", "optin", "marketing consent"), "consent_email"),
    **dict.fromkeys(("同意", "营销同意", "同意营销", "是否同意接收", "营销许可", "邮件订阅", "订阅"), "consent_email"),
    **dict.fromkeys(("是否同意", "接收营销邮件", "邮件营销许可"), "consent_email"),
    **dict.fromkeys(("sms consent", "sms opt-in", "短信订阅", "短信同意", "接收短信", "短信营销许可"), "consent_sms"),
    **dict.fromkeys(("wecom consent", "企业微信同意", "企微同意"), "consent_wecom"),
    **dict.fromkeys(("tags", "tag", "labels", "标签"), "tags"),
    # WeCom customer contact: the customer's external_userid and the owning employee's userid.
    **dict.fromkeys(
        ("external_userid", "wecom external userid", "外部联系人id", "企业微信客户id", "企微客户id"),
        "wecom_external_userid",
    ),
    **dict.fromkeys(
        ("wecom owner", "owner userid", "跟进人userid", "企微跟进人", "添加人userid"), "wecom_owner_userid"
    ),
}
CONSENT_WORDS = {
    **dict.fromkeys(("granted", "yes", "y", "true", "1", "是", "同意", "接受", "允许", "已同意", "订阅"), "granted"),
    **dict.fromkeys(("opt-in", "opted in", "subscribed", "√", "✓"), "granted"),
    **dict.fromkeys(("withdrawn", "no", "n", "false", "0", "否", "不同意", "拒绝", "退订", "不接受"), "withdrawn"),
    **dict.fromkeys(("不允许", "未同意", "已退订", "opt-out", "opted out", "unsubscribed", "×", "✗"), "withdrawn"),
}


def member_of(column, values: list[Any]):
    """`column IN (values)` for a batch of thousands: one array parameter on PostgreSQL (a
    2,000-item IN list costs more to build and parse than to run), a plain IN elsewhere."""
    if db.session.get_bind().dialect.name == "postgresql":
        element_type = BigInteger() if isinstance(column.type, Integer | BigInteger) else String()
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element_type)))
    return column.in_(list(values))


AREA = "imports"  # the storage area of uploads and their rejected rows


def upload_path(job: ImportJob) -> Path:
    """The uploaded file on this host (a local copy of what storage holds); a path that does
    not exist once the upload is removed."""
    return storage.local_path(AREA, job.stored_name)


class _SizeLimited:
    """A stream that refuses to be read past MAX_UPLOAD_BYTES."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.size = stream, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.size += len(chunk)
        if self.size > MAX_UPLOAD_BYTES:
            raise ImportRefused("too_large", megabytes=MAX_UPLOAD_BYTES // (1024 * 1024))
        return chunk


def job_format(job: ImportJob) -> TableFormat:
    """How the job's file is read: its kind from its content, the encoding the job keeps."""
    if file_kind(upload_path(job)) == "xlsx":
        return TableFormat("xlsx")
    return table_format(upload_path(job), job.encoding)


@dataclass
class Preview:
    headers: list[str]
    rows: list[list[str]]
    suggested: dict[str, str]  # column index -> field
    # The line of the first byte the chosen encoding cannot decode (None: the file decodes).
    undecodable_line: int | None = None


def save_upload(actor: Any, filename: str, stream: Any) -> ImportJob:
    """Store the uploaded file, work out how to read it and read its first rows for the
    mapping step; a file that is no table is refused and removed at once."""
    stored = f"{secrets.token_hex(8)}{Path(filename).suffix.lower()[:6]}"
    try:
        limited = _SizeLimited(stream)
        # Written on this host first, so that reading it back (the preview) is local.
        with storage.writing(AREA, stored) as draft, open(draft, "wb") as out:
            shutil.copyfileobj(limited, out, 1024 * 1024)
        size = limited.size
        table = table_format(storage.local_path(AREA, stored))
        job = ImportJob(
            created_by_id=getattr(actor, "id", None),
            original_name=filename[:255],
            stored_name=stored,
            encoding=table.encoding,
        )
        preview(job)  # refuses empty files before anything is recorded
    except ImportRefused:
        # Nothing of a refused upload is kept (the page is rendered after this).
        db.session.rollback()
        storage.delete(AREA, stored)
        db.session.commit()
        raise
    db.session.add(job)
    audit.record(actor, "import.uploaded", f"file:{filename[:100]}", {"bytes": size, "encoding": table.encoding})
    db.session.commit()
    return job


def import_for(actor: Any, job_id: int) -> ImportJob:
    """The import, if `actor` uploaded it or administers the portal; anyone else is told there
    is no such import (the view answers 404)."""
    job = db.session.get(ImportJob, job_id)
    if job is None or (job.created_by_id != actor.id and not actor.can(Permission.USERS_MANAGE)):
        raise ImportRefused("not_found")
    return job


def _own_import(actor: Any, job_id: int) -> ImportJob:
    """Changing an import is for the person who uploaded it only."""
    job = db.session.get(ImportJob, job_id)
    if job is None or job.created_by_id != actor.id:
        raise ImportRefused("not_found")
    return job


def preview(job: ImportJob, rows: int = 5) -> Preview:
    """The header and first rows as decoded, and the field each column seems to hold."""
    table = job_format(job)
    undecodable = first_undecodable_line(upload_path(job), table.encoding) if table.kind == "text" else None
    # Read leniently, shown only up to the first line the encoding cannot decode: the page says
    # where it is and offers the other encodings (the import itself is refused).
    iterator = iter_file_rows(upload_path(job), table, strict=False)
    sample: list[list[str]] = []
    try:
        header_row, headers = read_header(iterator)
        if undecodable is not None and header_row >= undecodable:
            raise ImportRefused("undecodable", encoding=table.encoding, row=undecodable)
        for number, cells in iterator:
            if len(sample) >= rows or (undecodable is not None and number >= undecodable):
                break
            if not is_blank(cells):
                sample.append(cells)
    finally:
        iterator.close()
    suggested = {}
    for index, header in enumerate(headers):
        name = header.lower()
        if name in HEADER_ALIASES and HEADER_ALIASES[name] not in suggested.values():
            suggested[str(index)] = HEADER_ALIASES[name]
        elif name:
            suggested[str(index)] = f"attr:{header}"
    return Preview(headers, sample, suggested, undecodable)


def choose_encoding(actor: Any, job_id: int, encoding: str) -> ImportJob:
    """Read the file with another encoding (the mapping page shows the preview again)."""
    job = _own_import(actor, job_id)
    if job.status != "uploaded":
        raise ImportRefused("already_started")
    if encoding not in ENCODING_CHOICES and encoding != job.encoding:
        raise ImportRefused("unknown_encoding", encoding=encoding)
    job.encoding = encoding_for(upload_path(job), encoding)
    audit.record(actor, "import.encoding_chosen", f"import:{job.id}", {"encoding": encoding})
    db.session.commit()
    return job


def confirm(actor: Any, job_id: int, mapping: dict[str, str], merge_policy: str, default_consent: str) -> ImportJob:
    job = _own_import(actor, job_id)
    if job.status != "uploaded":
        raise ImportRefused("already_started")
    mapping = {k: v for k, v in mapping.items() if v}
    fields = list(mapping.values())
    if any(not key.isdigit() for key in mapping):
        raise ImportRefused("unknown_fields", fields=[key for key in mapping if not key.isdigit()])
    if "email" not in fields and "mobile" not in fields:
        raise ImportRefused("no_contact_column")
    duplicates = sorted({f for f in fields if fields.count(f) > 1})
    if duplicates:
        raise ImportRefused("field_twice", fields=duplicates)
    unknown = [f for f in fields if f not in IMPORT_FIELDS and not f.startswith("attr:")]
    if unknown:
        raise ImportRefused("unknown_fields", fields=unknown)
    if merge_policy not in ("fill", "overwrite") or default_consent not in set(ConsentStatus):
        raise ImportRefused("choose_policy")
    if job_format(job).kind == "text":
        line = first_undecodable_line(upload_path(job), job.encoding)
        if line is not None:
            raise ImportRefused("undecodable", encoding=job.encoding, row=line)
    job.mapping, job.merge_policy, job.default_consent, job.status = mapping, merge_policy, default_consent, "queued"
    audit.record(
        actor,
        "import.started",
        f"import:{job.id}",
        {"mapping": mapping, "merge_policy": merge_policy, "default_consent": default_consent},
    )
    db.session.commit()
    return job


def remove_abandoned_uploads(days: int = ABANDONED_AFTER_DAYS) -> int:
    """Uploads nobody confirmed within `days`: their files go, the import is marked failed."""
    cutoff = utcnow() - timedelta(days=days)
    removed = 0
    for job in db.session.scalars(
        select(ImportJob).where(ImportJob.status == "uploaded", ImportJob.created_at < cutoff)
    ):
        storage.delete(AREA, job.stored_name)
        job.status, job.failure, job.finished_at = "failed", "abandoned", utcnow()
        removed += 1
    db.session.commit()
    return removed


# --- the import itself (run by the worker) ---------------------------------------------------


@dataclass(slots=True)
class _Row:
    number: int  # the row number Excel shows (the header is row 1 when nothing is above it)
    cells: list[str]
    fields: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    hashes: list[tuple[str, str]] = field(default_factory=list)


def problem(code: str, **params: Any) -> list[Any]:
    """One problem of a row: its code and parameters (the report makes the sentence)."""
    return [code, params]


def problems_text(problems: list[list[Any]]) -> str:
    """How a row's problems are kept (in the stage and the report file): canonical JSON."""
    return json.dumps(problems, ensure_ascii=False, sort_keys=True)


SUPPRESSED = problems_text([problem("suppressed")])
MOBILE_TAKEN = problems_text([problem("mobile_taken")])


def parse_plan(mapping: dict[int, str]) -> list[tuple[int, str, str]]:
    """The mapping as (column, kind, name) triples, worked out once per import rather than
    once per cell (a million-row file has eight million of them)."""
    plan = []
    for index, target in mapping.items():
        if target.startswith("attr:"):
            plan.append((index, "attr", target[5:]))
        elif target.startswith("consent_"):
            plan.append((index, "consent", target[8:]))
        elif target == "tags":
            plan.append((index, "tags", ""))
        else:
            plan.append((index, "field", target))
    return plan


def clean_text(value: str) -> str:
    """Without control characters (a NUL, a form feed pasted from another program)."""
    return _CONTROL.sub("", value).strip() if value else ""


def _parse(row: _Row, plan: list[tuple[int, str, str]], width: int) -> str | None:
    """Fill the row's clean values; returns every problem it has (as problems_text), or None.
    `width` is the header's: non-empty cells beyond it are a problem, never dropped silently.

    Written for a million rows: the rare checks (control characters, long values) are guarded
    by one cheap test per row."""
    cells = row.cells
    problems: list[list[Any]] = []
    count = len(cells)
    if count > width:
        extra = sum(1 for cell in cells[width:] if cell.strip())
        if extra:
            problems.append(problem("extra_cells", count=extra, width=width))
    dirty = _CONTROL.search("".join(cells)) is not None
    fields = row.fields
    for index, kind, name in plan:
        value = cells[index].strip() if index < count else ""
        if dirty:
            value = clean_text(value)
        if kind == "field":
            fields[name] = value
        elif kind == "attr":
            if value:
                if len(value) > ATTRIBUTE_LIMIT:
                    problems.append(problem("too_long", field=f"attr:{name}", limit=ATTRIBUTE_LIMIT, length=len(value)))
                row.attributes[name] = value
        elif kind == "consent":
            if value:
                status = CONSENT_WORDS.get(value.lower())
                if status is None:
                    problems.append(problem("consent_unknown", channel=name, value=value[:50]))
                else:
                    row.consent[name] = status
        else:
            row.tags = [t.strip() for t in _TAG_SEPARATORS.split(value) if t.strip()]
            for tag in row.tags:
                if len(tag) > TAG_LIMIT:
                    problems.append(problem("too_long", field="tags", limit=TAG_LIMIT, length=len(tag)))
    cleaned: dict[str, str | None] = {}
    for key, clean in (("email", normalise.email), ("mobile", normalise.mobile)):
        try:
            cleaned[key] = clean(fields.get(key))
        except normalise.InvalidValue as exc:
            problems.append(problem(exc.code, value=exc.value[:100]))
    if not (fields.get("email") or fields.get("mobile")):
        problems.append(problem("contact_missing"))
    for key in ("name", "company", "industry", "company_size", "wecom_external_userid", "wecom_owner_userid"):
        if key in fields:
            cleaned[key] = fields[key]
    if "province" in fields:
        cleaned["province"] = normalise.province(fields["province"])
    if "city" in fields:
        cleaned["city"] = normalise.city(fields["city"], cleaned.get("province") or "")
    if max(map(len, cells), default=0) > _SHORTEST_LIMIT:
        for key in TEXT_FIELDS:
            value = cleaned.get(key)
            if value and len(value) > FIELD_LIMITS[key]:
                problems.append(problem("too_long", field=key, limit=FIELD_LIMITS[key], length=len(value)))
    if problems:
        return problems_text(problems)
    row.fields = {k: v for k, v in cleaned.items() if v is not None}
    return None


class _Outcome:
    def __init__(self, writer: Any) -> None:
        self.created = self.updated = self.unchanged = self.merged = self.rejected = self.rows = self.blank = 0
        self.writer = writer
        # The counts at the last commit: what a failed import reports as done.
        self.committed: dict[str, int] = {}

    def reject(self, row: _Row, problems: str) -> None:
        self.rejected += 1
        self.writer.writerow([row.number, problems, *(neutralise(cell) for cell in row.cells)])

    def counts(self) -> dict[str, int]:
        names = ("rows", "created", "updated", "unchanged", "merged", "rejected", "blank")
        return {name: getattr(self, name) for name in names}

    def commit(self) -> None:
        db.session.commit()
        self.committed = self.counts()


def neutralise(value: str) -> str:
    """Cells a spreadsheet would run as a formula are made plain text (CSV files only: an XLSX
    cell is typed as text instead)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class ImportFailed(RuntimeError):
    """The import stopped; the job says so in plain words (the error itself goes to the log)."""


def run_import(job_id: int, progress: Callable[[int, str], None] | None = None) -> ImportJob:
    """Import the file of an ImportJob (idempotent: a finished or failed job is left as it
    is). Whatever goes wrong, the job ends failed with a plain message and the counts of what
    was committed before, its upload removed; the error is logged, never shown."""
    job = db.session.get(ImportJob, job_id)
    if job is None or job.status in ("done", "failed"):
        return job
    job.status = "running"
    db.session.commit()
    path = upload_path(job)
    mapping = {int(k): v for k, v in job.mapping.items()}
    outcome = _Outcome(writer=None)
    try:
        table = job_format(job)
        expected = estimate_rows(path, table) if progress else 1
        if stages_in_sql(table):
            from portal.audience.importing_staged import import_staged

            outcome = import_staged(job, table, mapping, expected, progress)
        else:
            outcome = _import_in_batches(job, table, mapping, expected, progress)
    except Exception as exc:
        db.session.rollback()
        log.exception("import %s failed", job_id)
        job = db.session.get(ImportJob, job_id)
        committed = getattr(exc, "committed", None) or outcome.committed
        for name, value in committed.items():
            setattr(job, name, value)
        job.failure = exc.code if isinstance(exc, ImportRefused) else "internal"
        job.failure_row = (exc.params.get("row") if isinstance(exc, ImportRefused) else None) or None
        job.status, job.finished_at = "failed", utcnow()
        audit.record(None, "import.failed", f"import:{job.id}", {"failure": job.failure, **committed})
        _store_report(job)
        storage.delete(AREA, job.stored_name)
        db.session.commit()
        return job
    for name, value in outcome.counts().items():
        setattr(job, name, value)
    job.status, job.finished_at = "done", utcnow()
    audit.record(None, "import.finished", f"import:{job.id}", outcome.counts())
    _store_report(job)
    storage.delete(AREA, job.stored_name)  # the report keeps the rejected rows; nothing else needs the file
    db.session.commit()
    return job


def stages_in_sql(table: TableFormat) -> bool:
    """Text files on PostgreSQL go through a staging table and set-based SQL (importing_staged);
    XLSX files and other databases are imported row by row, in batches."""
    return table.kind == "text" and db.session.get_bind().dialect.name == "postgresql"


def _import_in_batches(
    job: ImportJob,
    table: TableFormat,
    mapping: dict[int, str],
    expected: int,
    progress: Callable[[int, str], None] | None,
) -> _Outcome:
    """The row-by-row path (XLSX files, SQLite): batches of BATCH_SIZE rows, each one
    looked up, merged and written with a few set-based statements."""
    with (
        open(report_draft(job), "w", encoding="utf-8-sig", newline="") as report,
        closing(iter_file_rows(upload_path(job), table)) as rows,
    ):
        writer = csv.writer(report)
        _, headers = read_header(rows)
        writer.writerow(["row", "problems", *headers])
        outcome = _Outcome(writer)
        seen: set[int] = set()  # contacts this file reached already: later rows are merged into them
        batch: list[_Row] = []
        plan = parse_plan(mapping)
        for number, cells in rows:
            outcome.rows += 1
            if is_blank(cells):
                outcome.blank += 1
                continue
            batch.append(_Row(number, cells))
            if len(batch) >= BATCH_SIZE:
                _import_batch(job, batch, plan, len(headers), outcome, seen)
                batch = []
                if progress:
                    progress(min(99, 100 * outcome.rows // expected), f"{outcome.rows} / ~{expected}")
        if batch:
            _import_batch(job, batch, plan, len(headers), outcome, seen)
    return outcome


def _import_batch(
    job: ImportJob,
    batch: list[_Row],
    plan: list[tuple[int, str, str]],
    width: int,
    outcome: _Outcome,
    seen: set[int],
) -> None:
    """Import one batch. `seen` holds the contacts earlier batches of the file reached: a row
    reaching one of them (or one an earlier row of this batch reached) is merged within the file."""
    from portal.audience.service import suppression_hash

    valid: list[_Row] = []
    for row in batch:
        problems = _parse(row, plan, width)
        if problems:
            outcome.reject(row, problems)
        else:
            valid.append(row)
    if not valid:
        outcome.commit()
        return
    # Suppressed people (erased, hard-bounced) never come back.
    for r in valid:
        r.hashes = [
            (kind, suppression_hash(kind, r.fields[kind])) for kind in ("email", "mobile") if r.fields.get(kind)
        ]
    hashes = {pair for r in valid for pair in r.hashes}
    suppressed = {
        (kind, digest)
        for kind, digest in db.session.execute(
            select(Suppression.kind, Suppression.value_hash).where(
                member_of(Suppression.value_hash, [h for _, h in hashes])
            )
        )
    }
    emails = [r.fields["email"] for r in valid if r.fields.get("email")]
    mobiles = [r.fields["mobile"] for r in valid if r.fields.get("mobile")]
    existing: dict[str, dict[str, Any]] = {}
    columns = [Contact.id, *(getattr(Contact, f) for f in CONTACT_FIELDS), Contact.attributes]
    for chunk_values, column in ((emails, Contact.email), (mobiles, Contact.mobile)):
        if chunk_values:
            for row in db.session.execute(select(*columns).where(member_of(column, chunk_values))):
                record = dict(row._mapping)
                for key in ("email", "mobile"):
                    if record.get(key):
                        existing[record[key]] = record
    from portal import settings

    base_score = settings.get("scoring.base_score")
    new_rows: list[dict[str, Any]] = []
    new_row_refs: list[_Row] = []
    updates: dict[int, dict[str, Any]] = {}
    pending_new: dict[str, dict[str, Any]] = {}  # identities created in this batch, not yet inserted
    touched: list[tuple[_Row, dict[str, Any] | None]] = []
    reached: set[int] = set()  # id() of the records rows of this batch reached
    for row in valid:
        email, mobile = row.fields.get("email"), row.fields.get("mobile")
        if any(pair in suppressed for pair in row.hashes):
            outcome.reject(row, SUPPRESSED)
            continue
        current = (existing.get(email) if email else None) or (existing.get(mobile) if mobile else None)
        if current is None:
            current = (pending_new.get(email) if email else None) or (pending_new.get(mobile) if mobile else None)
        if current is None:
            values = {
                **{f: "" for f in CONTACT_FIELDS if f not in ("email", "mobile")},
                **row.fields,
                "attributes": dict(row.attributes),
                "score": base_score,
            }
            values.setdefault("email", None)
            values.setdefault("mobile", None)
            values["region"] = normalise.region_of(values["province"])
            new_rows.append(values)
            new_row_refs.append(row)
            reached.add(id(values))
            for key in (email, mobile):
                if key:
                    pending_new[key] = values
            outcome.created += 1
            continue
        merged_within_file = id(current) in reached or current.get("id") in seen
        reached.add(id(current))
        merged, changed = _merge(current, row, job.merge_policy)
        # Another contact may own the mobile this row brings: never merge two people silently.
        if (
            changed
            and merged.get("mobile")
            and merged.get("mobile") != current.get("mobile")
            and (existing.get(merged["mobile"], current) is not current or merged["mobile"] in pending_new)
        ):
            outcome.reject(row, MOBILE_TAKEN)
            continue
        if changed:
            current.update(merged)
            current["region"] = normalise.region_of(current["province"])
            if "id" in current:
                updates[current["id"]] = current
            # A row may give the contact a new email or mobile: later rows of the batch that
            # carry only that one must find it, not create a second contact with it.
            known = existing if "id" in current else pending_new
            for key in (current.get("email"), current.get("mobile")):
                if key:
                    known.setdefault(key, current)
        if merged_within_file:
            outcome.merged += 1
        elif changed:
            outcome.updated += 1
        else:
            outcome.unchanged += 1
        touched.append((row, current))
    if new_rows:
        _insert_contacts(new_rows)
        for row, values in zip(new_row_refs, new_rows, strict=True):
            touched.append((row, values))
    if updates:
        db.session.execute(
            update(Contact),
            [
                {
                    "id": cid,
                    **{f: v[f] for f in CONTACT_FIELDS},
                    "region": v["region"],
                    "attributes": v["attributes"],
                    "updated_at": utcnow(),
                }
                for cid, v in updates.items()
            ],
        )
    _apply_consent_and_tags(job, touched)
    seen.update(values["id"] for _, values in touched)
    outcome.commit()


INSERT_COLUMNS = (
    *CONTACT_FIELDS,
    "region",
    "attributes",
    "score",
    "lifecycle_stage",
    "unsubscribed",
    "unsubscribe_reason",
    "suppressed",
    "suppression_reason",
    "created_at",
    "updated_at",
)


def _insert_contacts(new_rows: list[dict[str, Any]]) -> None:
    """Insert new contacts and set their ids on the dicts. PostgreSQL gets COPY (no SQL text
    to build and parse for thousands of rows); other databases a multi-row INSERT."""
    now = utcnow()
    for values in new_rows:
        values.update(
            created_at=now,
            updated_at=now,
            lifecycle_stage="new",
            unsubscribed=False,
            unsubscribe_reason="",
            suppressed=False,
            suppression_reason="",
        )
    connection = db.session.connection()
    table = Contact.__table__
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.cursor()
        columns = ", ".join(INSERT_COLUMNS)
        with cursor.copy(f"COPY contacts ({columns}) FROM STDIN") as copy:
            for values in new_rows:
                copy.write_row(
                    [
                        json.dumps(values[c], ensure_ascii=False) if c == "attributes" else values[c]
                        for c in INSERT_COLUMNS
                    ]
                )
        ids: dict[str, int] = {}
        for key in ("email", "mobile"):
            wanted = [v[key] for v in new_rows if v.get(key)]
            if wanted:
                ids.update(
                    {
                        k: i
                        for i, k in connection.execute(
                            select(table.c.id, table.c[key]).where(member_of(table.c[key], wanted))
                        ).all()
                        if k
                    }
                )
        for values in new_rows:
            values["id"] = ids.get(values.get("email") or "") or ids[values["mobile"]]
        return
    inserted = connection.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True),
        [{c: v[c] for c in INSERT_COLUMNS} for v in new_rows],
    )
    for values, (contact_id,) in zip(new_rows, inserted, strict=True):
        values["id"] = contact_id


def _merge(current: dict[str, Any], row: _Row, policy: str) -> tuple[dict[str, Any], bool]:
    merged: dict[str, Any] = {}
    for key, value in row.fields.items():
        if not value:
            continue
        if (policy == "overwrite" or not current.get(key)) and current.get(key) != value:
            merged[key] = value
    attributes = dict(current.get("attributes") or {})
    for key, value in row.attributes.items():
        if (policy == "overwrite" or not attributes.get(key)) and attributes.get(key) != value:
            attributes[key] = value
    if attributes != (current.get("attributes") or {}):
        merged["attributes"] = attributes
    return merged, bool(merged)


def default_source(job: ImportJob) -> str:
    """The source of a consent the import's default gave (an explicit value may replace it)."""
    return f"import:{job.id}:default"


def _apply_consent_and_tags(job: ImportJob, touched: list[tuple[_Row, dict[str, Any] | None]]) -> None:
    """Consent, by precedence: a value in the file always wins over the import's default, and
    for one person a refusal wins over a grant whatever the rows' order (a refusal this import
    recorded in an earlier batch included); the default applies only to new contacts whose rows
    carry no value at all. Then the tags."""
    if not touched:
        return
    ids = [values["id"] for _, values in touched if values and "id" in values]
    existing = {
        (c, ch): (status, source)
        for c, ch, status, source in db.session.execute(
            select(
                ContactConsent.contact_id, ContactConsent.channel, ContactConsent.status, ContactConsent.source
            ).where(member_of(ContactConsent.contact_id, ids))
        )
    }
    source = f"import:{job.id}"
    explicit: dict[int, dict[str, str]] = {}  # contact -> channel -> status, refusals winning
    tag_pairs: set[tuple[int, str]] = set()
    for row, values in touched:
        contact_id = values["id"]
        statuses = explicit.setdefault(contact_id, {})
        for channel, status in row.consent.items():
            if statuses.get(channel) != ConsentStatus.WITHDRAWN:
                statuses[channel] = status
        for tag in row.tags:
            tag_pairs.add((contact_id, tag))
    inserts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    undone: list[tuple[int, str]] = []
    for contact_id, statuses in explicit.items():
        wanted = {channel: (status, source) for channel, status in statuses.items()}
        # The default applies to people none of whose rows has a value: one an earlier batch
        # gave it to, who has a value after all, loses it on the channels the file is silent on.
        if wanted:
            undone += [
                (contact_id, str(channel))
                for channel in Channel
                if channel not in wanted
                and existing.get((contact_id, str(channel)), ("", ""))[1] == default_source(job)
            ]
        is_new = all((contact_id, ch) not in existing for ch in Channel)
        if not wanted and is_new and job.default_consent != ConsentStatus.NONE:
            wanted = {channel: (job.default_consent, default_source(job)) for channel in (Channel.EMAIL, Channel.SMS)}
        for channel, (status, why) in wanted.items():
            key = (contact_id, str(channel))
            if key not in existing:
                inserts.append(
                    {"contact_id": contact_id, "channel": key[1], "status": status, "source": why}
                    | {"recorded_at": utcnow()}
                )
                continue
            current_status, current_source = existing[key]
            if current_status == ConsentStatus.WITHDRAWN and current_source == source:
                continue  # a refusal an earlier row of this file gave
            if current_status != status:
                changes.append({"contact_id": contact_id, "channel": key[1], "status": status, "source": why})
    if inserts:
        db.session.execute(insert(ContactConsent), inserts)
    for contact_id, channel in undone:
        db.session.execute(
            delete(ContactConsent).where(ContactConsent.contact_id == contact_id, ContactConsent.channel == channel)
        )
    for values in changes:
        db.session.execute(
            update(ContactConsent)
            .where(ContactConsent.contact_id == values["contact_id"], ContactConsent.channel == values["channel"])
            .values(status=values["status"], source=values["source"], recorded_at=utcnow())
        )
    if tag_pairs:
        from portal.audience.service import tag_by_name

        tag_ids = {name: tag_by_name(name).id for name in {name for _, name in tag_pairs}}
        have = set(
            db.session.execute(
                select(ContactTag.contact_id, ContactTag.tag_id).where(
                    member_of(ContactTag.contact_id, ids), ContactTag.tag_id.in_(tag_ids.values())
                )
            ).all()
        )
        new = [
            {"contact_id": c, "tag_id": tag_ids[n], "source": "import", "added_at": utcnow()}
            for c, n in tag_pairs
            if (c, tag_ids[n]) not in have
        ]
        if new:
            db.session.execute(insert(ContactTag), new)


def _report_name(job: ImportJob) -> str:
    return f"import-{job.id}-rejected.csv"


def report_path(job: ImportJob) -> Path:
    """The rejected rows as the import wrote them: row, problems (JSON codes), the cells (a
    local copy of what storage holds; a path that does not exist when there is no report)."""
    return storage.local_path(AREA, _report_name(job))


def report_draft(job: ImportJob) -> Path:
    """Where the running import writes its rejected rows on this host, until it ends."""
    return storage.scratch_path(_report_name(job))


def _store_report(job: ImportJob) -> None:
    """Keep the rejected rows the import wrote, finished or failed, where every host reads them."""
    draft = report_draft(job)
    if draft.is_file():
        with draft.open("rb") as stream:
            storage.save(AREA, _report_name(job), stream)
        draft.unlink()


def rejected_rows(job: ImportJob, limit: int | None = None) -> Iterator[tuple[int, list[list[Any]], list[str]]]:
    """(row number, problems as [code, parameters], cells) of each rejected row, in order."""
    path = report_path(job)
    if not path.exists():
        return
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for count, record in enumerate(reader):
            if limit is not None and count >= limit:
                return
            yield int(record[0]), json.loads(record[1]), record[2:]


def report_headers(job: ImportJob) -> list[str]:
    with open(report_path(job), encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(handle), [])[2:]


def recent_imports(actor: Any, limit: int = 20) -> list[ImportJob]:
    """The imports `actor` may open: their own, or everyone's for an administrator."""
    query = select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)
    if not actor.can(Permission.USERS_MANAGE):
        query = query.where(ImportJob.created_by_id == actor.id)
    return list(db.session.scalars(query))
