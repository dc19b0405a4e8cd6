"""Importing contacts from CSV and XLSX: streamed, validated row by row, de-duplicated by
email then mobile (inside the file and against the database), merged by the chosen policy.

Nothing is lost silently: every row ends created, updated, unchanged or rejected (with its
reason in the downloadable report), and those four add up to the rows in the file. Writes
go in batches of set-based statements."""

from __future__ import annotations

import codecs
import csv
import io
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charset_normalizer import from_bytes
from flask import current_app
from sqlalchemy import BigInteger, Integer, String, any_, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql

from portal import audit
from portal.audience import normalise
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

BATCH_SIZE = 2000
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
CONTACT_FIELDS = ("email", "mobile", "name", "company", "industry", "province", "city", "company_size")
IMPORT_FIELDS = (*CONTACT_FIELDS, "consent_email", "consent_sms", "consent_wecom", "tags")
# Header text (lower-cased) -> field. Chinese and English, as exported by common CRMs and Excel.
HEADER_ALIASES = {
    "email": "email",
    "e-mail": "email",
    "邮箱": "email",
    "电子邮箱": "email",
    "邮件": "email",
    "邮箱地址": "email",
    "mobile": "mobile",
    "phone": "mobile",
    "手机": "mobile",
    "手机号": "mobile",
    "手机号码": "mobile",
    "电话": "mobile",
    "name": "name",
    "full name": "name",
    "姓名": "name",
    "名字": "name",
    "联系人": "name",
    "company": "company",
    "公司": "company",
    "公司名称": "company",
    "企业": "company",
    "单位": "company",
    "industry": "industry",
    "行业": "industry",
    "所属行业": "industry",
    "province": "province",
    "省份": "province",
    "省": "province",
    "地区": "province",
    "city": "city",
    "城市": "city",
    "市": "city",
    "company size": "company_size",
    "company_size": "company_size",
    "规模": "company_size",
    "公司规模": "company_size",
    "企业规模": "company_size",
    "consent": "consent_email",
    "email consent": "consent_email",
    "邮件订阅": "consent_email",
    "同意": "consent_email",
    "营销同意": "consent_email",
    "sms consent": "consent_sms",
    "短信订阅": "consent_sms",
    "tags": "tags",
    "标签": "tags",
}
CONSENT_WORDS = {
    "granted": ConsentStatus.GRANTED,
    "yes": ConsentStatus.GRANTED,
    "y": ConsentStatus.GRANTED,
    "true": ConsentStatus.GRANTED,
    "1": ConsentStatus.GRANTED,
    "是": ConsentStatus.GRANTED,
    "同意": ConsentStatus.GRANTED,
    "withdrawn": ConsentStatus.WITHDRAWN,
    "no": ConsentStatus.WITHDRAWN,
    "n": ConsentStatus.WITHDRAWN,
    "false": ConsentStatus.WITHDRAWN,
    "0": ConsentStatus.WITHDRAWN,
    "否": ConsentStatus.WITHDRAWN,
    "不同意": ConsentStatus.WITHDRAWN,
    "退订": ConsentStatus.WITHDRAWN,
}


class ImportRefused(ValueError):
    """The file cannot be imported at all (empty, not a table...)."""


def member_of(column, values: list[Any]):
    """`column IN (values)` for a batch of thousands: one array parameter on PostgreSQL (a
    2,000-item IN list costs more to build and parse than to run), a plain IN elsewhere."""
    if db.session.get_bind().dialect.name == "postgresql":
        element_type = BigInteger() if isinstance(column.type, Integer | BigInteger) else String()
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element_type)))
    return column.in_(list(values))


def storage_dir() -> Path:
    directory = Path(current_app.config["STORAGE_DIR"]) / "imports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def detect_encoding(sample: bytes) -> str:
    """UTF-8 (with or without BOM), else what charset-normalizer finds; GBK-family files are
    read as GB18030, the superset Excel in China writes."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start > len(sample) - 4:  # a character cut by the sample's end
            return "utf-8"
    best = from_bytes(sample).best()
    if best is None:
        return "gb18030"
    name = best.encoding.lower().replace("-", "_")
    return "gb18030" if name in ("gbk", "gb2312", "gb18030", "cp936", "hz") else best.encoding


def _is_xlsx(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def iter_rows(path: Path, encoding: str = "") -> Iterator[list[str]]:
    """Every row as a list of strings, streamed (never the whole file in memory)."""
    if _is_xlsx(path):
        from openpyxl import load_workbook

        workbook = load_workbook(path, read_only=True, data_only=True)
        try:
            for row in workbook.active.iter_rows(values_only=True):
                yield ["" if cell is None else _cell_text(cell) for cell in row]
        finally:
            workbook.close()
        return
    with open(path, encoding=encoding or "utf-8", errors="replace", newline="") as handle:
        yield from csv.reader(handle)


def _cell_text(cell: Any) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # Excel stores mobile numbers as floats
    return str(cell)


@dataclass
class Preview:
    headers: list[str]
    rows: list[list[str]]
    suggested: dict[str, str]  # column index -> field
    encoding: str


def save_upload(actor: Any, filename: str, stream: io.BufferedIOBase) -> ImportJob:
    """Store the uploaded file and read its first rows for the mapping step."""
    stored = f"{secrets.token_hex(8)}{Path(filename).suffix.lower()[:6]}"
    path = storage_dir() / stored
    size = 0
    with open(path, "wb") as out:
        while chunk := stream.read(1024 * 1024):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                out.close()
                path.unlink()
                raise ImportRefused("The file is larger than 200 MB.")
            out.write(chunk)
    with open(path, "rb") as handle:
        encoding = "" if _is_xlsx(path) else detect_encoding(handle.read(256 * 1024))
    job = ImportJob(
        created_by_id=getattr(actor, "id", None), original_name=filename[:255], stored_name=stored, encoding=encoding
    )
    preview(job)  # refuses empty files before anything is recorded
    db.session.add(job)
    audit.record(actor, "import.uploaded", f"file:{filename[:100]}", {"bytes": size, "encoding": encoding})
    db.session.commit()
    return job


def preview(job: ImportJob, rows: int = 5) -> Preview:
    iterator = iter_rows(storage_dir() / job.stored_name, job.encoding)
    headers = next(iterator, None)
    if headers is None or not any(cell.strip() for cell in headers):
        raise ImportRefused("The file is empty.")
    sample = [row for _, row in zip(range(rows), iterator, strict=False)]
    iterator.close()
    suggested = {}
    for index, header in enumerate(headers):
        name = header.strip().lstrip("\ufeff").lower()
        if name in HEADER_ALIASES and HEADER_ALIASES[name] not in suggested.values():
            suggested[str(index)] = HEADER_ALIASES[name]
        elif name:
            suggested[str(index)] = f"attr:{header.strip()}"
    return Preview(headers=headers, rows=sample, suggested=suggested, encoding=job.encoding)


def confirm(actor: Any, job_id: int, mapping: dict[str, str], merge_policy: str, default_consent: str) -> ImportJob:
    job = db.session.get(ImportJob, job_id)
    if job is None or job.status != "uploaded":
        raise ImportRefused("This import cannot be started again.")
    mapping = {k: v for k, v in mapping.items() if v}
    fields = list(mapping.values())
    if "email" not in fields and "mobile" not in fields:
        raise ImportRefused("Map at least one column to email or mobile.")
    duplicates = {f for f in fields if fields.count(f) > 1}
    if duplicates:
        raise ImportRefused(f"Each field can come from one column only: {', '.join(sorted(duplicates))}")
    unknown = [f for f in fields if f not in IMPORT_FIELDS and not f.startswith("attr:")]
    if unknown:
        raise ImportRefused(f"Unknown fields: {', '.join(unknown)}")
    if merge_policy not in ("fill", "overwrite") or default_consent not in set(ConsentStatus):
        raise ImportRefused("Choose a merge policy and a default consent.")
    job.mapping, job.merge_policy, job.default_consent, job.status = mapping, merge_policy, default_consent, "queued"
    audit.record(
        actor,
        "import.started",
        f"import:{job.id}",
        {"mapping": mapping, "merge_policy": merge_policy, "default_consent": default_consent},
    )
    db.session.commit()
    return job


# --- the import itself (run by the worker) ---------------------------------------------------


@dataclass(slots=True)
class _Row:
    number: int  # 1-based data row number (the header is row 0)
    cells: list[str]
    fields: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    consent: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    hashes: list[tuple[str, str]] = field(default_factory=list)


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


def _parse(row: _Row, mapping: dict[int, str] | list[tuple[int, str, str]]) -> str | None:
    """Fill the row's clean values; returns the reason to reject it, or None."""
    cells = row.cells
    width = len(cells)
    fields = row.fields
    for index, kind, name in parse_plan(mapping) if isinstance(mapping, dict) else mapping:
        value = cells[index].strip() if index < width else ""
        if kind == "field":
            fields[name] = value
        elif kind == "attr":
            if value:
                row.attributes[name] = value
        elif kind == "consent":
            if value:
                status = CONSENT_WORDS.get(value.lower())
                if status is None:
                    return f"unknown consent value '{value}'"
                row.consent[name] = status
        else:
            row.tags = [t.strip() for t in value.replace("，", ",").replace(";", ",").split(",") if t.strip()]
    try:
        cleaned = {
            "email": normalise.email(row.fields.get("email")),
            "mobile": normalise.mobile(row.fields.get("mobile")),
        }
    except normalise.InvalidValue as exc:
        return str(exc)
    if not cleaned["email"] and not cleaned["mobile"]:
        return "an email or a mobile number is required"
    for key in ("name", "company", "industry", "company_size"):
        if key in row.fields:
            cleaned[key] = row.fields[key][:200]
    if "province" in row.fields:
        cleaned["province"] = normalise.province(row.fields["province"])
    if "city" in row.fields:
        cleaned["city"] = normalise.city(row.fields["city"], cleaned.get("province", ""))
    row.fields = {k: v for k, v in cleaned.items() if v is not None}
    return None


class _Outcome:
    def __init__(self, writer: Any) -> None:
        self.created = self.updated = self.unchanged = self.rejected = self.rows = 0
        self.writer = writer

    def reject(self, row: _Row, reason: str) -> None:
        self.rejected += 1
        self.writer.writerow([row.number, reason, *(neutralise(cell) for cell in row.cells)])


def neutralise(value: str) -> str:
    """Cells a spreadsheet would run as a formula are made plain text."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def run_import(job_id: int, progress: Callable[[int, str], None] | None = None) -> ImportJob:
    """Import the file of an ImportJob (idempotent: a finished job is left as it is)."""
    job = db.session.get(ImportJob, job_id)
    if job is None or job.status == "done":
        return job
    job.status = "running"
    db.session.commit()
    path = storage_dir() / job.stored_name
    mapping = {int(k): v for k, v in job.mapping.items()}
    expected = estimate_rows(path) if progress else 1
    if stages_in_sql(path):
        from portal.audience.importing_staged import import_staged

        outcome = import_staged(job, path, mapping, expected, progress)
    else:
        outcome = _import_in_batches(job, path, mapping, expected, progress)
    job.rows, job.created, job.updated = outcome.rows, outcome.created, outcome.updated
    job.unchanged, job.rejected = outcome.unchanged, outcome.rejected
    job.status, job.finished_at = "done", utcnow()
    audit.record(
        None,
        "import.finished",
        f"import:{job.id}",
        {
            "rows": job.rows,
            "created": job.created,
            "updated": job.updated,
            "unchanged": job.unchanged,
            "rejected": job.rejected,
        },
    )
    db.session.commit()
    return job


def stages_in_sql(path: Path) -> bool:
    """CSV files on PostgreSQL go through a staging table and set-based SQL (importing_staged);
    XLSX files and other databases are imported row by row, in batches."""
    return not _is_xlsx(path) and db.session.get_bind().dialect.name == "postgresql"


def _import_in_batches(
    job: ImportJob, path: Path, mapping: dict[int, str], expected: int, progress: Callable[[int, str], None] | None
) -> _Outcome:
    """The row-by-row path (XLSX files, SQLite): batches of BATCH_SIZE rows, each one
    looked up, merged and written with a few set-based statements."""
    with open(report_path(job), "w", encoding="utf-8-sig", newline="") as report:
        writer = csv.writer(report)
        rows = iter_rows(path, job.encoding)
        headers = next(rows, None) or []
        writer.writerow(["row", "reason", *headers])
        outcome = _Outcome(writer)
        seen: dict[str, int] = {}  # email/mobile -> contact id, for duplicates inside the file
        batch: list[_Row] = []
        for number, cells in enumerate(rows, start=1):
            if not any(cell.strip() for cell in cells):
                continue  # blank lines are not rows
            outcome.rows += 1
            batch.append(_Row(number, cells))
            if len(batch) >= BATCH_SIZE:
                _import_batch(job, batch, mapping, outcome, seen)
                batch = []
                if progress:
                    progress(min(99, 100 * number // expected), f"{outcome.rows} / ~{expected}")
        if batch:
            _import_batch(job, batch, mapping, outcome, seen)
    return outcome


def estimate_rows(path: Path) -> int:
    """Data rows in the file, cheaply (for the progress bar): newlines, or the sheet's size."""
    if _is_xlsx(path):
        from openpyxl import load_workbook

        workbook = load_workbook(path, read_only=True)
        try:
            return max((workbook.active.max_row or 1) - 1, 1)
        finally:
            workbook.close()
    lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            lines += chunk.count(b"\n")
    return max(lines - 1, 1)


def _import_batch(
    job: ImportJob, batch: list[_Row], mapping: dict[int, str], outcome: _Outcome, seen: dict[str, int]
) -> None:
    from portal.audience.service import suppression_hash

    valid: list[_Row] = []
    plan = parse_plan(mapping)
    for row in batch:
        reason = _parse(row, plan)
        if reason:
            outcome.reject(row, reason)
        else:
            valid.append(row)
    if not valid:
        db.session.commit()
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
    for row in valid:
        email, mobile = row.fields.get("email"), row.fields.get("mobile")
        if any(pair in suppressed for pair in row.hashes):
            outcome.reject(row, "suppressed: this person was erased or must not be contacted")
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
            new_rows.append(values)
            new_row_refs.append(row)
            for key in (email, mobile):
                if key:
                    pending_new[key] = values
            outcome.created += 1
            continue
        merged, changed = _merge(current, row, job.merge_policy)
        # Another contact may own the mobile this row brings: never merge two people silently.
        if (
            changed
            and merged.get("mobile")
            and merged.get("mobile") != current.get("mobile")
            and (existing.get(merged["mobile"], current) is not current or merged["mobile"] in pending_new)
        ):
            outcome.reject(row, "the mobile number belongs to another contact")
            continue
        if changed:
            current.update(merged)
            if "id" in current:
                updates[current["id"]] = current
            # A row may give the contact a new email or mobile: later rows of the batch that
            # carry only that one must find it, not create a second contact with it.
            known = existing if "id" in current else pending_new
            for key in (current.get("email"), current.get("mobile")):
                if key:
                    known.setdefault(key, current)
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
                {"id": cid, **{f: v[f] for f in CONTACT_FIELDS}, "attributes": v["attributes"], "updated_at": utcnow()}
                for cid, v in updates.items()
            ],
        )
    _apply_consent_and_tags(job, touched)
    db.session.commit()


INSERT_COLUMNS = (
    *CONTACT_FIELDS,
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


def _apply_consent_and_tags(job: ImportJob, touched: list[tuple[_Row, dict[str, Any] | None]]) -> None:
    """Consent from the file's columns, else the import's default for new contacts; tags."""
    if not touched:
        return
    ids = [values["id"] for _, values in touched if values and "id" in values]
    existing = {
        (c, ch): status
        for c, ch, status in db.session.execute(
            select(ContactConsent.contact_id, ContactConsent.channel, ContactConsent.status).where(
                member_of(ContactConsent.contact_id, ids)
            )
        )
    }
    inserts: dict[tuple[int, str], dict[str, Any]] = {}
    changes: dict[tuple[int, str], dict[str, Any]] = {}
    tag_pairs: set[tuple[int, str]] = set()
    source = f"import:{job.id}"
    for row, values in touched:
        contact_id = values["id"]
        wanted = dict(row.consent)
        is_new = all((contact_id, ch) not in existing for ch in Channel)
        if not wanted and is_new and job.default_consent != ConsentStatus.NONE:
            wanted = {Channel.EMAIL: job.default_consent, Channel.SMS: job.default_consent}
        for channel, status in wanted.items():
            key = (contact_id, str(channel))
            if key not in existing:
                inserts[key] = {
                    "contact_id": contact_id,
                    "channel": str(channel),
                    "status": status,
                    "source": source,
                    "recorded_at": utcnow(),
                }
            elif existing[key] != status:
                changes[key] = {"contact_id": contact_id, "channel": str(channel), "status": status}
        for tag in row.tags:
            tag_pairs.add((contact_id, tag))
    if inserts:
        db.session.execute(insert(ContactConsent), list(inserts.values()))
    for values in changes.values():
        db.session.execute(
            update(ContactConsent)
            .where(ContactConsent.contact_id == values["contact_id"], ContactConsent.channel == values["channel"])
            .values(status=values["status"], source=source, recorded_at=utcnow())
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


def report_path(job: ImportJob) -> Path:
    return storage_dir() / f"import-{job.id}-rejected.csv"


def recent_imports(limit: int = 20) -> list[ImportJob]:
    return list(db.session.scalars(select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)))
