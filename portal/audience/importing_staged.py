"""The PostgreSQL path of the contact import: the file is streamed once into a temporary
staging table with COPY, and the matching, merging, consents and tags are set-based SQL.

Python still parses every row (the same `_parse` as the row-by-row path, so emails, mobiles,
provinces and the rejection messages are identical by construction) and computes the
suppression HMACs while streaming; the database does everything that touches other rows.

Which rows SQL may handle. Today's rule is sequential: each row is matched against what the
rows before it created or changed. A row whose email, mobile and matched contacts are shared
with no other row of the file cannot be affected by any other row, so the set-based result
equals the sequential one. Every other row (duplicates inside the file, two rows reaching the
same contact, rows SQL cannot express) belongs to a group that no "simple" row touches, so that
group is handed, in file order and in the same batches as before, to the row-by-row code
(`_import_batch`): it gets exactly today's behaviour, and the two halves cannot see each other.
"""

from __future__ import annotations

import csv
import hmac
import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from flask import current_app
from sqlalchemy import text

from portal.audience.importing import (
    BATCH_SIZE,
    MOBILE_TAKEN,
    SUPPRESSED,
    TEXT_FIELDS,
    _import_batch,
    _Outcome,
    _parse,
    _Row,
    default_source,
    neutralise,
    parse_plan,
    report_draft,
    upload_path,
)
from portal.audience.importing_files import TableFormat, is_blank, iter_rows, read_header
from portal.audience.models import ImportJob
from portal.audience.normalise import PROVINCES
from portal.extensions import db
from portal.models_base import utcnow

CONSENT_CHANNELS = ("email", "sms", "wecom")
# Cells of one row travel as one column, joined by the ASCII unit separator; a row whose cells
# contain it (never seen in real files) is stored as JSON instead, marked by the record separator.
CELL_SEP, JSON_MARK = "\x1f", "\x1e"
# The SQL below is assembled from these constant column and channel names only (hence the
# `noqa: S608`s); every value from the file or the job travels as a bound parameter or by COPY.
STAGE_COLUMNS = (
    "n",
    "batch",
    "reason",
    "raw",
    "e",
    "m",
    "eh",
    "mh",
    *TEXT_FIELDS,
    "attrs",
    *(f"c_{channel}" for channel in CONSENT_CHANNELS),
    "tags",
)
# Rows per COPY write: big enough that the per-call cost vanishes, small enough for memory.
COPY_CHUNK_ROWS = 5000
PROGRESS_EVERY = 50_000
# Share of the progress bar the streaming pass stands for; the SQL steps fill the rest.
STREAM_SHARE = 60


def pack_cells(cells: list[str]) -> str:
    joined = CELL_SEP.join(cells)
    # COPY cannot carry a NUL; JSON escapes it.
    if joined.count(CELL_SEP) != len(cells) - 1 or joined.startswith(JSON_MARK) or "\x00" in joined:
        return JSON_MARK + json.dumps(cells, ensure_ascii=False)
    return joined


def unpack_cells(raw: str) -> list[str]:
    if raw.startswith(JSON_MARK):
        return json.loads(raw[1:])
    return raw.split(CELL_SEP)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def needs_escaping(text_value: str) -> bool:
    return _COPY_SPECIAL.search(text_value) is not None


def copy_line(values: list[str | None], escape: bool = True) -> str:
    """One row in COPY's text format: tab-separated, \\N for NULL, backslash escapes.
    `escape=False` is for rows known to hold no backslash, tab or line break (checked once
    on the raw cells every other value is cut from), which is nearly all of them."""
    # Lists, not generators: join builds a list from a generator first anyway.
    if escape:
        return "\t".join(["\\N" if v is None else v.translate(_COPY_ESCAPES) for v in values]) + "\n"
    return "\t".join(["\\N" if v is None else v for v in values]) + "\n"


def region_sql(province: str) -> str:
    """SQL for the region of the province expression `province` (normalise.region_of in SQL),
    built from the constant province list only."""
    cases = " ".join(f"WHEN '{full}' THEN '{group}'" for full, _aliases, group in PROVINCES)
    return f"CASE {province} {cases} ELSE '' END"


def import_staged(
    job: ImportJob,
    table: TableFormat,
    mapping: dict[int, str],
    expected: int,
    progress: Callable[[int, str], None] | None,
) -> _Outcome:
    """Import the file of `job` on PostgreSQL; the outcome counts and the rejected-rows report
    are the same as the row-by-row path's."""
    # A connection of its own: the temporary tables live as long as it does, and the progress
    # updates (committed on db.session) never commit the import's work half-way.
    with db.engine.connect() as connection:
        try:
            return _run(connection, job, table, mapping, expected, progress)
        finally:
            connection.rollback()
            connection.execute(
                text("DROP TABLE IF EXISTS import_stage, import_work, import_rejects, import_matched, import_fallback")
            )
            connection.commit()


def _run(connection, job, table, mapping, expected, progress) -> _Outcome:
    connection.execute(
        text("DROP TABLE IF EXISTS import_stage, import_work, import_rejects, import_matched, import_fallback")
    )
    connection.execute(
        text(
            """
            CREATE TEMP TABLE import_stage (
                n bigint, batch integer, reason text, raw text,
                e text, m text, eh text, mh text,
                name text, company text, industry text, province text, city text, company_size text,
                wecom_external_userid text, wecom_owner_userid text,
                attrs text, c_email text, c_sms text, c_wecom text, tags text
            )"""
        )
    )
    # Rows refused after reading (suppressed, mobile taken, the row-by-row part's refusals).
    connection.execute(text("CREATE TEMP TABLE import_rejects (n bigint, reason text)"))
    outcome = _Outcome(writer=None)
    headers = _stream_into_stage(connection, job, table, mapping, outcome, expected, progress)
    connection.execute(text("ANALYZE import_stage"))
    step = _Steps(progress, outcome, expected)
    _classify(connection)
    step(75)
    _merge_simple_rows(connection, job, outcome, set(mapping.values()))
    step(90)
    connection.commit()  # before the row-by-row part, which writes through db.session
    outcome.committed = outcome.counts()
    _import_the_rest(connection, job, mapping, len(headers), outcome)
    step(95)
    outcome.rejected = _write_report(connection, job, headers)
    return outcome


class _Steps:
    def __init__(self, progress, outcome, expected) -> None:
        self.progress, self.outcome, self.expected = progress, outcome, expected

    def __call__(self, percent: int) -> None:
        if self.progress:
            self.progress(percent, f"{self.outcome.rows} / ~{self.expected}")


def _stream_into_stage(connection, job, table, mapping, outcome, expected, progress) -> list[str]:
    """Parse every row in Python (rejects get their problems here) and COPY it to the stage."""
    key = current_app.config["SECRET_KEY"].encode()
    with closing(iter_rows(upload_path(job), table)) as rows:
        return _copy_rows(connection, rows, job, mapping, outcome, expected, progress, key)


def _copy_rows(connection, rows, job, mapping, outcome, expected, progress, key) -> list[str]:
    _, headers = read_header(rows)
    width = len(headers)
    cursor = connection.connection.dbapi_connection.cursor()
    ordinal = 0  # non-blank rows so far: the old path's batches are BATCH_SIZE of them
    buffer: list[str] = []
    plan = parse_plan(mapping)
    with cursor.copy(f"COPY import_stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN") as copy:
        for number, cells in rows:
            outcome.rows += 1
            if is_blank(cells):
                outcome.blank += 1
                continue
            batch = ordinal // BATCH_SIZE
            ordinal += 1
            row = _Row(number, cells)
            reason = _parse(row, plan, width)
            raw = pack_cells(cells)
            if reason:
                buffer.append(copy_line([str(number), str(batch), reason, raw, *_NO_VALUES]))
            else:
                values = _staged_values(row, batch, key, raw)
                # Every staged value is cut from the raw cells, except the attributes' JSON.
                buffer.append(copy_line(values, escape=bool(row.attributes) or needs_escaping(raw)))
            if len(buffer) >= COPY_CHUNK_ROWS:
                copy.write("".join(buffer))
                buffer = []
            if progress and ordinal % PROGRESS_EVERY == 0:
                progress(min(STREAM_SHARE, STREAM_SHARE * number // expected), f"{ordinal} / ~{expected}")
        if buffer:
            copy.write("".join(buffer))
    return headers


_NO_VALUES = [None] * (len(STAGE_COLUMNS) - 4)
_NO_CONSENT = (None,) * len(CONSENT_CHANNELS)


def _staged_values(row: _Row, batch: int, key: bytes, raw: str) -> list[str | None]:
    fields = row.fields
    email, mobile = fields.get("email"), fields.get("mobile")
    # Same digest as service.suppression_hash, with the key read once instead of per row.
    email_hash = hmac.digest(key, f"email:{email}".encode(), "sha256").hex() if email else None
    mobile_hash = hmac.digest(key, f"mobile:{mobile}".encode(), "sha256").hex() if mobile else None
    tags = row.tags
    consent = row.consent
    return [
        str(row.number),
        str(batch),
        None,
        raw,
        email,
        mobile,
        email_hash,
        mobile_hash,
        fields.get("name"),
        fields.get("company"),
        fields.get("industry"),
        fields.get("province"),
        fields.get("city"),
        fields.get("company_size"),
        fields.get("wecom_external_userid"),
        fields.get("wecom_owner_userid"),
        json.dumps(row.attributes, ensure_ascii=False) if row.attributes else None,
        *((consent.get(channel) for channel in CONSENT_CHANNELS) if consent else _NO_CONSENT),
        # Tags hold no control character (cleaned while parsing), so the separator is safe.
        CELL_SEP.join(tags) if tags else None,
    ]


def _classify(connection) -> None:
    """import_work: the valid rows with the contacts their email and mobile belong to, and
    `fallback` set on every row that shares an email, a mobile or a contact with another row
    (or that SQL does not handle): those go through the row-by-row code."""
    connection.execute(
        text(
            """
            CREATE TEMP TABLE import_work AS
            SELECT s.n, s.batch, s.e, s.m, s.name, s.company, s.industry, s.province, s.city,
                   s.company_size, s.wecom_external_userid, s.wecom_owner_userid,
                   s.attrs, s.c_email, s.c_sms, s.c_wecom, s.tags,
                   ce.id AS ce, cm.id AS cm, false AS fallback,
                   pe.id IS NOT NULL OR pm.id IS NOT NULL AS suppressed,
                   -- An id for every row that may create a contact; the fallback rows' are unused.
                   CASE WHEN ce.id IS NULL AND cm.id IS NULL
                        THEN nextval(pg_get_serial_sequence('contacts', 'id')) END AS new_id
            FROM import_stage s
            LEFT JOIN contacts ce ON ce.email = s.e
            LEFT JOIN contacts cm ON cm.mobile = s.m
            LEFT JOIN suppressions pe ON pe.kind = 'email' AND pe.value_hash = s.eh
            LEFT JOIN suppressions pm ON pm.kind = 'mobile' AND pm.value_hash = s.mh
            WHERE s.reason IS NULL
            """
        )
    )
    # Suppressed people (erased, hard-bounced) never come back; such a row has no other effect.
    connection.execute(
        text(
            """
            WITH gone AS (DELETE FROM import_work WHERE suppressed RETURNING n)
            INSERT INTO import_rejects SELECT n, :reason FROM gone
            """
        ),
        {"reason": SUPPRESSED},
    )
    connection.execute(text("ANALYZE import_work"))
    # Joins, not `IN (subquery)`: with a few thousand duplicates the planner may estimate the
    # subquery too big to hash and rescan it for every row.
    connection.execute(
        text(
            """
            CREATE TEMP TABLE import_fallback AS
            WITH links AS (
                SELECT ce AS contact_id, n FROM import_work WHERE ce IS NOT NULL
                UNION SELECT cm, n FROM import_work WHERE cm IS NOT NULL
            ),
            shared AS (SELECT contact_id FROM links GROUP BY contact_id HAVING count(*) > 1)
            SELECT w.n FROM import_work w
            JOIN (SELECT e FROM import_work WHERE e IS NOT NULL GROUP BY e HAVING count(*) > 1) twice USING (e)
            UNION SELECT w.n FROM import_work w
            JOIN (SELECT m FROM import_work WHERE m IS NOT NULL GROUP BY m HAVING count(*) > 1) twice USING (m)
            UNION SELECT w.n FROM import_work w JOIN shared ON shared.contact_id IN (w.ce, w.cm)
            -- merging attributes into an existing contact's JSON keeps Python's rules in Python
            UNION SELECT n FROM import_work WHERE attrs IS NOT NULL AND (ce IS NOT NULL OR cm IS NOT NULL)
            """
        )
    )
    connection.execute(text("UPDATE import_work w SET fallback = true FROM import_fallback f WHERE f.n = w.n"))
    connection.execute(text("DROP TABLE import_fallback"))


def _merge_simple_rows(connection, job: ImportJob, outcome: _Outcome, targets: set[str]) -> None:
    """New contacts for rows matching nobody; fill/overwrite for rows matching one contact
    (by email first, else by mobile); then their consents and tags."""
    from portal import settings

    now = utcnow()
    overwrite = job.merge_policy == "overwrite"
    outcome.created = connection.execute(
        text(
            f"""
            INSERT INTO contacts (id, email, mobile, {", ".join(TEXT_FIELDS)}, region, attributes, score,
                                  lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed,
                                  suppression_reason, created_at, updated_at)
            SELECT new_id, e, m, {", ".join(f"coalesce({f}, '')" for f in TEXT_FIELDS)}, {region_sql("province")},
                   coalesce(attrs, '{{}}')::json, :score, 'new', false, '', false, '', :now, :now
            FROM import_work WHERE NOT fallback AND new_id IS NOT NULL
            """  # noqa: S608
        ),
        {"score": settings.get("scoring.base_score"), "now": now},
    ).rowcount

    # A field changes when the row brings a value, it differs, and the policy allows it:
    # "fill" only where the contact has nothing, "overwrite" always (as _merge does).
    def changes(field: str, column: str) -> str:
        return (
            f"coalesce(w.{field} <> '' AND w.{field} IS DISTINCT FROM c.{column}"
            f" AND (:overwrite OR coalesce(c.{column}, '') = ''), false)"
        )

    fields = {"email": "e", "mobile": "m", **{f: f for f in TEXT_FIELDS}}
    connection.execute(
        text(
            f"""
            CREATE TEMP TABLE import_matched AS
            SELECT w.n, c.id AS contact_id,
                   {", ".join(f"{changes(field, column)} AS ch_{column}" for column, field in fields.items())},
                   {", ".join(f"w.{field} AS new_{column}" for column, field in fields.items())},
                   w.cm IS NOT NULL AND w.cm <> c.id AS mobile_owned_by_other
            FROM import_work w JOIN contacts c ON c.id = coalesce(w.ce, w.cm)
            WHERE NOT w.fallback
            """  # noqa: S608
        ),
        {"overwrite": overwrite},
    )
    any_change = " OR ".join(f"ch_{column}" for column in fields)
    assignments = ", ".join(f"{c} = CASE WHEN m.ch_{c} THEN m.new_{c} ELSE c.{c} END" for c in fields)
    # Never merge two people silently: a row bringing a mobile that another contact owns.
    connection.execute(
        text(
            """
            INSERT INTO import_rejects SELECT n, :reason FROM import_matched WHERE ch_mobile AND mobile_owned_by_other
            """
        ),
        {"reason": MOBILE_TAKEN},
    )
    connection.execute(text("DELETE FROM import_matched WHERE ch_mobile AND mobile_owned_by_other"))
    outcome.updated = connection.execute(
        text(
            f"""
            UPDATE contacts c SET
                {assignments},
                region = {region_sql("CASE WHEN m.ch_province THEN m.new_province ELSE c.province END")},
                updated_at = :now
            FROM import_matched m
            WHERE c.id = m.contact_id AND ({any_change})
            """  # noqa: S608
        ),
        {"now": now},
    ).rowcount
    matched = connection.execute(text("SELECT count(*) FROM import_matched")).scalar()
    outcome.unchanged = matched - outcome.updated
    _consents_and_tags(connection, job, now, targets)
    connection.execute(text("DROP TABLE import_matched"))


def _consents_and_tags(connection, job: ImportJob, now, targets: set[str]) -> None:
    """As _apply_consent_and_tags: the file's consent columns, else (for a contact with no
    recorded consent at all) the import's default for email and SMS; then the tags."""
    touched = """
        SELECT w.*, coalesce(w.new_id, m.contact_id) AS contact_id
        FROM import_work w LEFT JOIN import_matched m ON m.n = w.n
        WHERE NOT w.fallback AND (w.new_id IS NOT NULL OR m.n IS NOT NULL)
    """
    # Each statement reads every touched row: skipped when the import cannot produce any.
    consent_columns = any(target.startswith("consent_") for target in targets)
    wanted = [
        f"SELECT contact_id, '{channel}' AS channel, c_{channel} AS status, :source AS source "  # noqa: S608
        f"FROM touched WHERE c_{channel} IS NOT NULL"
        for channel in CONSENT_CHANNELS
    ]
    if job.default_consent != "none":
        wanted += [
            f"""SELECT contact_id, '{channel}', :default, :default_source FROM touched t
                WHERE c_email IS NULL AND c_sms IS NULL AND c_wecom IS NULL
                  AND NOT EXISTS (SELECT 1 FROM contact_consents cc WHERE cc.contact_id = t.contact_id
                                  AND cc.channel IN ('email', 'sms', 'wecom'))"""  # noqa: S608
            for channel in ("email", "sms")
        ]
    if consent_columns or job.default_consent != "none":
        connection.execute(
            text(
                f"""
            WITH touched AS ({touched})
            INSERT INTO contact_consents (contact_id, channel, status, source, recorded_at)
            SELECT contact_id, channel, status, source, :now FROM ({" UNION ALL ".join(wanted)}) wanted
            ON CONFLICT (contact_id, channel) DO UPDATE
                SET status = excluded.status, source = excluded.source, recorded_at = excluded.recorded_at
                WHERE contact_consents.status <> excluded.status
            """  # noqa: S608
            ),
            {
                "source": f"import:{job.id}",
                "default_source": default_source(job),
                "now": now,
                "default": job.default_consent,
            },
        )
    if "tags" not in targets:
        return
    pairs = f"""
        SELECT DISTINCT t.contact_id, tag_name FROM ({touched}) t,
        unnest(string_to_array(t.tags, E'\\x1f')) AS tag_name WHERE t.tags IS NOT NULL
    """  # noqa: S608
    connection.execute(
        text(
            f"""
            INSERT INTO tags (name, description, created_at)
            SELECT DISTINCT tag_name, '', :now FROM ({pairs}) p ORDER BY tag_name
            ON CONFLICT (name) DO NOTHING
            """  # noqa: S608
        ),
        {"now": now},
    )
    connection.execute(
        text(
            f"""
            INSERT INTO contact_tags (contact_id, tag_id, source, added_at)
            SELECT p.contact_id, tags.id, 'import', :now FROM ({pairs}) p JOIN tags ON tags.name = p.tag_name
            ON CONFLICT DO NOTHING
            """  # noqa: S608
        ),
        {"now": now},
    )


class _Collect:
    """Stands in for the report writer of the row-by-row code: keeps its rejections so that
    they are written to the stage and reported in order with all the others."""

    def __init__(self) -> None:
        self.rejected: list[tuple[int, str]] = []

    def writerow(self, row: list[Any]) -> None:
        self.rejected.append((row[0], row[1]))


def _import_the_rest(connection, job: ImportJob, mapping: dict[int, str], width: int, outcome: _Outcome) -> None:
    """The fallback rows, in file order and grouped in the batches the row-by-row path would
    have put them in, through that path's own code."""
    collect = _Collect()
    inner = _Outcome(collect)
    seen: set[int] = set()
    plan = parse_plan(mapping)
    batch: list[_Row] = []
    current = None
    for n, batch_no, raw in _fallback_rows(connection):
        if batch_no != current and batch:
            _import_batch(job, batch, plan, width, inner, seen)
            outcome.committed = {**outcome.counts(), **_added(outcome, inner)}
            batch = []
        current = batch_no
        batch.append(_Row(n, unpack_cells(raw)))
    if batch:
        _import_batch(job, batch, plan, width, inner, seen)
    for name, value in _added(outcome, inner).items():
        setattr(outcome, name, value)
    connection.commit()  # ends the streaming read
    if collect.rejected:
        connection.execute(
            text("INSERT INTO import_rejects (n, reason) VALUES (:n, :reason)"),
            [{"n": n, "reason": reason} for n, reason in collect.rejected],
        )
        connection.commit()


def _added(outcome: _Outcome, inner: _Outcome) -> dict[str, int]:
    names = ("created", "updated", "unchanged", "merged")
    return {name: getattr(outcome, name) + getattr(inner, name) for name in names}


def _fallback_rows(connection) -> Iterator[tuple[int, int, str]]:
    # Streamed: this connection only reads its temporary table meanwhile, so the row-by-row
    # code committing through db.session never waits for it.
    yield from connection.execute(
        text(
            """
            SELECT s.n, s.batch, s.raw FROM import_stage s
            WHERE s.n IN (SELECT n FROM import_work WHERE fallback) ORDER BY s.n
            """
        ).execution_options(stream_results=True, yield_per=BATCH_SIZE)
    )


def _write_report(connection, job: ImportJob, headers: list[str]) -> int:
    """Rejected rows in the order the row-by-row path writes them: batch by batch, the rows
    refused while reading before those refused while merging, each in file order."""
    rejected = 0
    with open(report_draft(job), "w", encoding="utf-8-sig", newline="") as report:
        writer = csv.writer(report)
        writer.writerow(["row", "problems", *headers])
        result = connection.execute(
            text(
                """
                SELECT s.n, coalesce(s.reason, r.reason), s.raw
                FROM import_stage s LEFT JOIN import_rejects r ON r.n = s.n
                WHERE s.reason IS NOT NULL OR r.n IS NOT NULL
                ORDER BY s.batch, s.reason IS NULL, s.n
                """
            ).execution_options(stream_results=True, yield_per=BATCH_SIZE)
        )
        for n, reason, raw in result:
            writer.writerow([n, reason, *(neutralise(cell) for cell in unpack_cells(raw))])
            rejected += 1
    connection.commit()
    return rejected
