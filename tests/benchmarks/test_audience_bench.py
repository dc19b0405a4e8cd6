"""Import of a million-row CSV against PostgreSQL COPY of the same file, and a segment count
against the equivalent hand-written SQL, measured in the same run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from sqlalchemy import text

from tests.benchmarks.conftest import ROWS, report
from tests.benchmarks.datagen import write_contacts_csv
from tests.conftest import ROOT


def test_import_million_rows_vs_copy(app, worker_env, tmp_path, make_user):
    from portal.extensions import db

    path = tmp_path / "contacts.csv"
    write_contacts_csv(path, ROWS)
    user_id = make_user("marketing_manager")

    # Our import, in a process of its own so that its peak memory is its alone.
    script = textwrap.dedent(f"""
        import io, resource, time
        from portal import create_app
        from portal.audience import importing
        from portal.auth.models import User
        from portal.extensions import db
        app = create_app()
        with app.app_context():
            actor = db.session.get(User, {user_id})
            with open({str(path)!r}, "rb") as handle:
                job = importing.save_upload(actor, "contacts.csv", handle)
            importing.confirm(actor, job.id, importing.preview(job).suggested, "fill", "none")
            started = time.perf_counter()
            job = importing.run_import(job.id)
            seconds = time.perf_counter() - started
            print("RESULT", seconds, job.rows, job.created, job.updated, job.unchanged, job.merged, job.rejected,
                  job.blank, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=worker_env, capture_output=True, text=True, check=True
    ).stdout
    seconds, rows, created, updated, unchanged, merged, rejected, blank, rss_mb = output.split("RESULT")[1].split()
    seconds = float(seconds)

    # Raw COPY of the same file into a scratch table, on the same server, same run.
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(
                "CREATE TEMP TABLE copy_bench (name text, email text, mobile text, company text, "
                "industry text, province text, city text, company_size text)"
            )
            started = time.perf_counter()
            with (
                open(path, "rb") as handle,
                cursor.copy("COPY copy_bench FROM STDIN WITH (FORMAT csv, HEADER)") as copy,
            ):
                while chunk := handle.read(1 << 20):
                    copy.write(chunk)
            raw.commit()
            copy_seconds = time.perf_counter() - started
            indexed_seconds = _copy_into_contacts_shape(raw, path)
        finally:
            raw.close()
    counts = (created, updated, unchanged, merged, rejected, blank)
    assert sum(int(count) for count in counts) == int(rows) == ROWS
    report("import_rows", rows)
    report("import_created", created)
    report("import_merged_within_file", merged)
    report("import_rejected", rejected)
    report("import_seconds", f"{seconds:.1f}")
    report("import_rows_per_s", f"{int(rows) / seconds:.0f}")
    report("copy_rows_per_s", f"{ROWS / copy_seconds:.0f}")
    report("import_vs_copy_ratio", f"{copy_seconds / seconds:.3f}")
    report("copy_into_contacts_shape_rows_per_s", f"{ROWS / indexed_seconds:.0f}")
    report("import_vs_copy_into_contacts_shape_ratio", f"{indexed_seconds / seconds:.3f}")
    report("import_peak_rss_mb", rss_mb)


def _copy_into_contacts_shape(raw, path) -> float:
    """Seconds to COPY the same file into a logged table shaped like `contacts`, with the
    same indexes (made non-unique, since the raw file holds duplicates): the cost of writing
    a million rows where the import must write them, without any of its checks."""
    cursor = raw.cursor()
    cursor.execute("CREATE TABLE copy_bench_shape (LIKE contacts INCLUDING DEFAULTS)")
    # The portal fills most columns itself; the raw file has only some of them.
    for (column,) in cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'copy_bench_shape' "
        "AND column_name <> 'id' AND is_nullable = 'NO'"
    ).fetchall():
        cursor.execute(f'ALTER TABLE copy_bench_shape ALTER COLUMN "{column}" DROP NOT NULL')
    definitions = cursor.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'contacts'"
    ).fetchall()
    for (definition,) in definitions:
        on = definition.index(" ON ")
        columns = definition[definition.index(" USING ", on) :]
        cursor.execute(f"CREATE INDEX ON copy_bench_shape {columns}")
    raw.commit()
    started = time.perf_counter()
    with (
        open(path, "rb") as handle,
        cursor.copy(
            "COPY copy_bench_shape (name, email, mobile, company, industry, province, city, company_size) "
            "FROM STDIN WITH (FORMAT csv, HEADER)"
        ) as copy,
    ):
        while chunk := handle.read(1 << 20):
            copy.write(chunk)
    raw.commit()
    seconds = time.perf_counter() - started
    cursor.execute("DROP TABLE copy_bench_shape")
    raw.commit()
    return seconds


def test_segment_count_vs_handwritten_sql(app, make_user):
    from portal.audience.segments import count_segment
    from portal.extensions import db

    with app.app_context():
        # A million contacts, generated inside PostgreSQL, with a tag on one in five.
        db.session.execute(
            text(f"""
            INSERT INTO contacts (email, name, company, industry, province, region, city, company_size, attributes,
                                  score, lifecycle_stage, unsubscribed, unsubscribe_reason, suppressed,
                                  suppression_reason, created_at, updated_at)
            SELECT 'seg' || g || '@example.com', '客户' || g, '', (ARRAY['科技','零售','制造','金融'])[1 + g % 4],
                   (ARRAY['上海市','浙江省','江苏省','广东省','北京市',
                          '四川省','湖北省','福建省','山东省','安徽省'])[1 + g % 10],
                   -- each province's 大区, as every write of the portal sets it
                   (ARRAY['华东','华东','华东','华南','华北','西南','华中','华东','华东','华东'])[1 + g % 10],
                   '', '', '{{}}', 40 + (g::bigint * 7919) % 60, 'new', false, '', false, '', now(), now()
            FROM generate_series(1, {ROWS}) AS g
        """)
        )
        db.session.execute(text("INSERT INTO tags (name, description, created_at) VALUES ('高意向客户', '', now())"))
        db.session.execute(
            text("""
            INSERT INTO contact_tags (contact_id, tag_id, source, added_at)
            SELECT id, (SELECT id FROM tags WHERE name = '高意向客户'), 'bench', now() FROM contacts WHERE id % 5 = 0
        """)
        )
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        rules = {
            "op": "and",
            "items": [
                {"field": "region", "operator": "eq", "value": "华东"},
                {"field": "tag", "operator": "has", "value": "高意向客户"},
                {"field": "score", "operator": "gte", "value": 70},
            ],
        }
        handwritten = text("""
            SELECT count(*) FROM contacts c
            WHERE c.region = '华东'
              AND c.score >= 70
              AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.contact_id = c.id
                          AND t.tag_id = (SELECT id FROM tags WHERE name = '高意向客户'))
        """)

        def best_of(run, times=5):
            best = None
            for _ in range(times):
                started = time.perf_counter()
                value = run()
                elapsed = time.perf_counter() - started
                best = elapsed if best is None or elapsed < best else best
            return value, best

        ours, ours_seconds = best_of(lambda: count_segment(rules))
        theirs, theirs_seconds = best_of(lambda: db.session.scalar(handwritten))
        assert ours == theirs > 0
        report("segment_contacts", ROWS)
        report("segment_count", ours)
        report("segment_count_s", f"{ours_seconds:.3f}")
        report("handwritten_count_s", f"{theirs_seconds:.3f}")
        report("segment_vs_handwritten_ratio", f"{ours_seconds / theirs_seconds:.2f}")
