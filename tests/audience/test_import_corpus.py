"""A corpus of awkward contact files, as Excel, WPS and CRM exports write them, each run through
the upload page, the mapping page and the import job, with the outcome it must have: refused at
upload with a sentence, refused at confirmation with the row, or imported with counts that add
up and exactly the stored values expected. On PostgreSQL the staged path and the row-by-row path
must give the same contacts, consents, counts and report for every importable file.

The table printed by `python -m tests.audience.test_import_corpus` is the corpus's file -> outcome."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from openpyxl import Workbook
from sqlalchemy import select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from portal import storage
from portal.audience import importing
from portal.audience.models import Contact, ContactConsent, ImportJob
from portal.extensions import db
from tests.audience.test_import_staged import _reset

COUNTS = ("rows", "created", "updated", "unchanged", "merged", "rejected", "blank")


def xlsx(rows: list[list[Any]]) -> bytes:
    workbook = Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document>姓名 邮箱</w:document>")
    return buffer.getvalue()


def large_csv(rows: int) -> bytes:
    """Rows with duplicates (by email, then by mobile), bad emails, landlines and blank lines."""
    lines = ["姓名,邮箱,手机,公司,省份,城市,营销同意\n"]
    for n in range(rows):
        if n % 1000 == 999:
            lines.append(",,,,,,\n")
        elif n % 250 == 7:
            lines.append(f"坏{n},broken{n}@,,,,,\n")
        elif n % 500 == 11:
            lines.append(f"座机{n},,010-6552{n % 10000:04d},,,,\n")
        else:
            k = n - 5 if n % 100 == 50 else n
            lines.append(
                f"客户{k},user{k}@example.com,1{3 + k % 7}{k:09d},公司{k % 97},浙江,杭州,{'是' if k % 3 else ''}\n"
            )
    return "".join(lines).encode("gb18030")


@dataclass
class Case:
    name: str  # the uploaded file's name
    data: Callable[[], bytes]
    # "refused" at upload, "confirm_refused" (the mapping page warns, confirming is refused),
    # or "imported"
    outcome: str
    says: str = ""  # what the page says (zh-CN), for refusals
    counts: dict[str, int] = field(default_factory=dict)
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)  # email or mobile -> fields
    consent: dict[str, dict[str, str]] = field(default_factory=dict)  # email -> channel -> status
    problems: dict[int, list[str]] = field(default_factory=dict)  # row -> problem codes
    default_consent: str = "none"
    encoding: str = ""


HEADER = "姓名,邮箱,手机,公司,省份,城市\n"
CORPUS = [
    Case(
        "consent-refusal-first.csv",
        lambda: "邮箱,手机,营销同意\nwang@example.com,13800138000,否\nwang@example.com,13800138000,\n".encode(),
        "imported",
        counts={"rows": 2, "created": 1, "merged": 1},
        consent={"wang@example.com": {"email": "withdrawn"}},
        default_consent="granted",
    ),
    Case(
        "consent-refusal-last.csv",
        lambda: "邮箱,手机,营销同意\nwang@example.com,13800138000,\nwang@example.com,13800138000,否\n".encode(),
        "imported",
        counts={"rows": 2, "created": 1, "merged": 1},
        consent={"wang@example.com": {"email": "withdrawn"}},
        default_consent="granted",
    ),
    Case(
        "consent-grant-then-refusal.csv",
        lambda: (
            "邮箱,同意营销\nli@example.com,是\nLI@example.com,不同意\nzhao@example.com,拒绝\nqian@example.com,\n".encode()
        ),
        "imported",
        counts={"rows": 4, "created": 3, "merged": 1},
        consent={
            "li@example.com": {"email": "withdrawn"},
            "zhao@example.com": {"email": "withdrawn"},
            "qian@example.com": {"email": "granted", "sms": "granted"},
        },
        default_consent="granted",
    ),
    Case(
        "small-gbk.csv",
        lambda: "姓名,邮箱\n张伟,zw@example.com\n".encode("gbk"),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟"}},
        encoding="gb18030",
    ),
    Case(
        "gbk-chinese-after-256kb.csv",
        lambda: (
            ("name,email\n" + "".join(f"n{i},u{i}@example.com\n" for i in range(15000))).encode()
            + "王芳,wf@example.com\n".encode("gbk")
        ),
        "imported",
        counts={"rows": 15001, "created": 15001},
        stored={"wf@example.com": {"name": "王芳"}},
        encoding="gb18030",
    ),
    Case(
        "utf8-with-a-stray-byte.csv",
        lambda: "姓名,邮箱\n张伟,zw@example.com\n李娜,ln@example.com\n".encode() + b"\xff\xfe,x@example.com\n",
        "confirm_refused",
        says="第 4 行",
        encoding="utf-8",
    ),
    Case(
        "semicolons.csv",
        lambda: "姓名;邮箱;公司\n张伟;zw@example.com;甲,乙公司\n".encode(),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟", "company": "甲,乙公司"}},
    ),
    Case(
        "tabs.txt",
        lambda: "姓名\t邮箱\t城市\n张伟\tzw@example.com\t杭州\n".encode(),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟", "city": "杭州"}},
    ),
    Case(
        "pipes.csv",
        lambda: "姓名|邮箱\n张伟|zw@example.com\n".encode(),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟"}},
    ),
    Case(
        "unicode-text.txt",
        lambda: "\ufeff姓名\t邮箱\t省份\r\n张伟\tzw@example.com\t广东\r\n".encode("utf-16-le"),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟", "province": "广东省", "region": "华南"}},
        encoding="utf-16",
    ),
    Case(
        "wps-named.xls",
        lambda: xlsx([["姓名", "邮箱", "手机"], ["陈", "chen@example.com", 13700137000]]),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"chen@example.com": {"mobile": "+8613700137000"}},
    ),
    Case(
        "xlsx-named.csv",
        lambda: xlsx([["邮箱"], ["a@example.com"]]),
        "imported",
        counts={"rows": 1, "created": 1},
    ),
    Case(
        "xlsx-without-extension",
        lambda: xlsx([["邮箱"], ["a@example.com"]]),
        "imported",
        counts={"rows": 1, "created": 1},
    ),
    Case(
        "truncated.xlsx",
        lambda: xlsx([["邮箱"], *([f"u{n}@example.com"] for n in range(2000))])[:-300],
        "refused",
        says="文件已损坏",
    ),
    Case("report.docx", docx, "refused", says="不是表格"),
    Case(
        "legacy.xls", lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600), "refused", says="请另存为 CSV 或 XLSX"
    ),
    Case("photo.png", lambda: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, "refused", says="不是表格"),
    Case("program.csv", lambda: bytes(range(256)) * 40, "refused", says="不是表格"),
    Case("empty.csv", lambda: b"\n\n \n", "refused", says="文件是空的"),
    Case(
        "blank-first-lines.csv",
        lambda: ("\n\n" + HEADER + "张伟,zw@example.com,,,,\n\n李娜,,12345,,,\n").encode(),
        "imported",
        counts={"rows": 3, "created": 1, "rejected": 1, "blank": 1},
        problems={6: ["mobile_invalid"]},  # Excel's row 6: two blank lines, the header, a row, a blank
    ),
    Case(
        "duplicate-headers.csv",
        lambda: "邮箱,备注,备注\nzw@example.com,一,二\n".encode(),
        "imported",
        counts={"rows": 1, "created": 1},
    ),
    Case(
        "long-values.csv",
        lambda: (
            "邮箱,公司规模,城市,备注\n"
            + "a@example.com,"
            + "五百人以上" * 8
            + ",杭州,x\n"
            + "b@example.com,小,"
            + "城" * 51
            + ",x\n"
            + "c@example.com,小,杭州,"
            + "长" * 140_000
            + "\n"
            + "d@example.com,小,杭州,x\n"
        ).encode(),
        "imported",
        counts={"rows": 4, "created": 1, "rejected": 3},
        problems={2: ["too_long"], 3: ["too_long"], 4: ["too_long"]},
    ),
    Case(
        "control-characters.csv",
        lambda: "姓名,邮箱,公司\n张\x00伟,zw@example.com,云\x0b启\x1f科技\n".encode(),
        "imported",
        counts={"rows": 1, "created": 1},
        stored={"zw@example.com": {"name": "张伟", "company": "云启科技"}},
    ),
    Case(
        "every-problem-of-a-row.csv",
        lambda: (HEADER + "坏,not-an-email,010-65529988,,,,多余\n座机,,010-65529988,,,\n无,,,,,\n").encode(),
        "imported",
        counts={"rows": 3, "rejected": 3},
        problems={
            2: ["extra_cells", "email_invalid", "mobile_not_mobile"],
            3: ["mobile_not_mobile"],
            4: ["contact_missing"],
        },
    ),
    Case(
        "formula-cells.csv",
        lambda: (HEADER + '=HYPERLINK("http://evil"),bad,,,,\n').encode(),
        "imported",
        counts={"rows": 1, "rejected": 1},
        problems={2: ["email_invalid"]},
    ),
    Case(
        "regions.csv",
        lambda: (HEADER + "甲,a@example.com,,,上海,\n乙,b@example.com,,,香港,\n丙,c@example.com,,,火星,\n").encode(),
        "imported",
        counts={"rows": 3, "created": 3},
        stored={
            "a@example.com": {"province": "上海市", "region": "华东"},
            "b@example.com": {"region": "港澳台/海外"},
            "c@example.com": {"province": "火星", "region": ""},
        },
    ),
    Case(
        "large-gbk-crm-export.csv",
        lambda: large_csv(12_000),
        "imported",
        # 12 blank lines, 48 bad emails, 24 landlines, 120 repeats of the row five above
        counts={"rows": 12_000, "created": 11_796, "merged": 120, "rejected": 72, "blank": 12},
        encoding="gb18030",
    ),
]


def _selected_mapping(page: str) -> dict[str, str]:
    """The mapping the page proposes, as a browser would submit it untouched."""
    mapping = {}
    for name, options in re.findall(r'<select name="(col-\d+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', options)
        mapping[name] = chosen.group(1) if chosen else ""
    return mapping


def _uploads(app) -> set[str]:
    with app.app_context():
        return {name for name in storage.names(importing.AREA) if not name.startswith("import-")}


def post_file(client, name: str, data: bytes):
    """The upload form's POST. The body is encoded here, in memory: the test client would
    spool a large one to a temporary file it never closes."""
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), name)})
    return client.post("/audience/imports", data=body, content_type=f"multipart/form-data; boundary={boundary}")


def upload_and_confirm(client, case: Case) -> tuple[Any, str]:
    """The upload page, then the mapping page with its own proposal; returns the answer to the
    confirmation and the mapping page."""
    response = post_file(client, case.name, case.data())
    if case.outcome == "refused":
        return response, ""
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    mapping_url = response.headers["Location"]
    page = client.get(mapping_url)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    form = {**_selected_mapping(text), "merge_policy": "fill", "default_consent": case.default_consent}
    return client.post(mapping_url, data=form), text


def run_queued_import(app, job_id: int) -> ImportJob:
    """What the worker does with the enqueued job (jobs.audience.run_import), in this process."""
    from jobs.audience import run_import

    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        run_import(job.id, job.job_run_id)
        db.session.refresh(job)
        db.session.expunge(job)
        return job


def latest_job_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(ImportJob.id).order_by(ImportJob.id.desc()).limit(1))


def check_stored(app, case: Case) -> None:
    with app.app_context():
        for key, expected in case.stored.items():
            contact = db.session.scalar(select(Contact).where((Contact.email == key) | (Contact.mobile == key)))
            assert contact is not None, key
            assert {name: getattr(contact, name) for name in expected} == expected
        for email, expected in case.consent.items():
            rows = db.session.execute(
                select(ContactConsent.channel, ContactConsent.status, ContactConsent.source)
                .join(Contact)
                .where(Contact.email == email)
            ).all()
            assert {channel: status for channel, status, _ in rows} == expected, email
            assert all(source.startswith("import:") for _, _, source in rows)  # the record names the import
        for contact in db.session.scalars(select(Contact)):
            for name in ("name", "company", "city", "province"):
                assert "\ufffd" not in getattr(contact, name)  # never a replacement character


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_corpus_file_through_the_upload_page(app, client, sign_in, manager, case: Case):
    sign_in(manager)
    before = _uploads(app)
    response, mapping_page = upload_and_confirm(client, case)
    body = response.get_data(as_text=True)
    if case.outcome == "refused":
        assert response.status_code == 422 and case.says in body
        assert _uploads(app) == before  # nothing left behind
        return
    if case.encoding:
        with app.app_context():
            assert db.session.get(ImportJob, latest_job_id(app)).encoding == case.encoding
    if case.outcome == "confirm_refused":
        assert case.says in mapping_page  # the mapping page warns before anything starts
        assert response.status_code == 422 and case.says in body
        return
    assert response.status_code == 303, body[:3000]
    job = run_queued_import(app, latest_job_id(app))
    assert job.status == "done"
    expected = {name: case.counts.get(name, 0) for name in COUNTS}
    assert {name: getattr(job, name) for name in COUNTS} == expected
    assert sum(getattr(job, name) for name in COUNTS[1:]) == job.rows
    check_stored(app, case)
    with app.app_context():
        job_row = db.session.get(ImportJob, job.id)
        found = {
            row: [code for code, _params in problems] for row, problems, _cells in importing.rejected_rows(job_row)
        }
    for row, codes in case.problems.items():
        assert found[row] == codes
    page = client.get(f"/audience/imports/{job.id}")
    assert page.status_code == 200 and f'id="rows">{job.rows}<' in page.get_data(as_text=True)
    if job.rejected:
        report = client.get(f"/audience/imports/{job.id}/rejected.csv")
        assert report.status_code == 200
        text = report.get_data(as_text=True)
        assert "行" in text.splitlines()[0] and '"[[' not in text  # sentences, never codes
        if case.name == "formula-cells.csv":
            assert "'=HYPERLINK" in text
    assert _uploads(app) == before  # the import removes its upload


# --- the PostgreSQL staged path and the row-by-row path agree on every importable file ---------


def _snapshot(app, job_id: int) -> dict:
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        contacts = {
            (c.email, c.mobile): {
                col.name: getattr(c, col.key) for col in Contact.__table__.columns if col.name not in _VOLATILE
            }
            for c in db.session.scalars(select(Contact))
        }
        consents = sorted(
            (email, channel, status, source.split(":")[-1] if source.count(":") > 1 else "")
            for email, channel, status, source in db.session.execute(
                select(Contact.email, ContactConsent.channel, ContactConsent.status, ContactConsent.source).join(
                    Contact
                )
            )
        )
        report = importing.report_path(job).read_text("utf-8-sig") if importing.report_path(job).exists() else ""
        return {
            "counts": {name: getattr(job, name) for name in COUNTS},
            "contacts": contacts,
            "consents": consents,
            "report": report,
        }


_VOLATILE = {"id", "created_at", "updated_at"}
IMPORTABLE = [case for case in CORPUS if case.outcome == "imported"]


@pytest.mark.parametrize("case", IMPORTABLE, ids=[case.name for case in IMPORTABLE])
def test_staged_and_row_by_row_imports_agree(app, import_file, monkeypatch, case: Case):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("the staged import is the PostgreSQL path")
    results = []
    for staged in (False, True):
        with app.app_context():
            _reset()
        monkeypatch.setattr(importing, "stages_in_sql", lambda table, staged=staged: staged and table.kind == "text")
        job = import_file(case.data(), name=case.name, consent=case.default_consent)
        results.append(_snapshot(app, job.id))
    assert results[1]["counts"] == results[0]["counts"]
    assert results[1]["report"] == results[0]["report"]
    assert results[1]["consents"] == results[0]["consents"]
    assert results[1]["contacts"] == results[0]["contacts"]


def test_the_encoding_can_be_chosen_and_the_preview_follows(app, client, sign_in, manager):
    sign_in(manager)
    data = "姓名,email\n張偉,zw@example.com\n".encode("big5")
    response = post_file(client, "big5.csv", data)
    mapping_url = response.headers["Location"]
    job_id = int(mapping_url.split("/")[-2])
    assert "張偉" not in client.get(mapping_url).get_data(as_text=True)  # read as GB18030 first
    fragment = client.post(
        f"/audience/imports/{job_id}/encoding", data={"encoding": "big5"}, headers={"HX-Request": "true"}
    )
    text = fragment.get_data(as_text=True)
    assert fragment.status_code == 200 and text.lstrip().startswith('<div id="import-mapping">') and "張偉" in text
    with app.app_context():
        assert db.session.get(ImportJob, job_id).encoding == "big5"


def test_another_persons_import_is_not_found_but_an_administrator_may_view_it(
    app, client, sign_in, manager, make_user, import_file
):
    job = import_file((HEADER + "坏,bad,,,,\n").encode())
    other = make_user("marketing_manager")
    sign_in(other)
    for url in (f"/audience/imports/{job.id}", f"/audience/imports/{job.id}/rejected.csv"):
        assert client.get(url).status_code == 404
    assert client.get("/audience/imports").get_data(as_text=True).count(f"/audience/imports/{job.id}") == 0
    admin = make_user("administrator", "marketing_manager")  # may open the import pages at all
    sign_in(admin)
    assert client.get(f"/audience/imports/{job.id}").status_code == 200


def test_a_failed_import_says_so_plainly_and_keeps_no_upload(app, client, sign_in, manager):
    sign_in(manager)
    response, _page = upload_and_confirm(
        client, Case("a.csv", lambda: (HEADER + "张伟,zw@example.com,,,,\n").encode(), "imported")
    )
    assert response.status_code == 303
    job_id = latest_job_id(app)
    with app.app_context():
        storage.delete(importing.AREA, db.session.get(ImportJob, job_id).stored_name)  # the file vanished
        db.session.commit()
    with pytest.raises(importing.ImportFailed):
        run_queued_import(app, job_id)
    with app.app_context():
        job = db.session.get(ImportJob, job_id)
        assert (job.status, job.failure) == ("failed", "internal")
    page = client.get(f"/audience/imports/{job_id}").get_data(as_text=True)
    assert 'id="failure"' in page and "Error" not in page and "No such file" not in page


def test_abandoned_uploads_are_removed_after_some_days(app, client, sign_in, manager):
    from datetime import timedelta

    from portal.models_base import utcnow

    sign_in(manager)
    post_file(client, "a.csv", b"email\na@example.com\n")
    with app.app_context():
        job = db.session.get(ImportJob, latest_job_id(app))
        assert importing.remove_abandoned_uploads() == 0
        job.created_at = utcnow() - timedelta(days=importing.ABANDONED_AFTER_DAYS + 1)
        db.session.commit()
        assert importing.remove_abandoned_uploads() == 1
        assert not importing.upload_path(job).exists() and job.status == "failed"


if __name__ == "__main__":
    for case in CORPUS:
        outcome = case.says if case.outcome != "imported" else json.dumps(case.counts, ensure_ascii=False)
        print(f"| {case.name} | {case.outcome} | {outcome} |")


def test_an_encoding_that_garbles_the_file_is_shown_as_such_and_can_be_undone(app, client, sign_in, manager):
    sign_in(manager)
    response = post_file(client, "utf8.csv", "姓名,邮箱\n张伟,zw@example.com\n".encode())
    job_id = int(response.headers["Location"].split("/")[-2])
    for encoding in ("utf-16", "big5", "gb18030"):
        page = client.post(f"/audience/imports/{job_id}/encoding", data={"encoding": encoding})
        assert page.status_code == 303
        assert client.get(f"/audience/imports/{job_id}/mapping").status_code == 200
    client.post(f"/audience/imports/{job_id}/encoding", data={"encoding": "utf-8"})
    assert "张伟" in client.get(f"/audience/imports/{job_id}/mapping").get_data(as_text=True)
