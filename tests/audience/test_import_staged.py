"""The PostgreSQL staged import (COPY + set-based SQL) must give exactly what the row-by-row
path gives: same contacts, consents, tags, counts and rejected-rows report, on a file full of
the awkward cases."""

import pytest
from sqlalchemy import delete, select

from portal.audience import importing, importing_staged
from portal.audience.models import Contact, ContactConsent, ContactTag, Suppression, Tag
from portal.audience.service import suppression_hash
from portal.extensions import db

HEADER = "姓名,邮箱,手机,公司,省份,城市,同意,短信订阅,标签,职位\n"
TRICKY = (
    # normalisation: mixed case and spaces, +86 / 86 / separators, full-width comma in tags, aliases
    '王小明, Wang.Xiao@Example.COM ,+86 138 0013 8000,上海云启,shanghai,上海市,是,,"高意向，华东",总监\n'
    "李华,li@example.com,86-139-0013-9000,,广东,深圳市,,否,,\n"
    "陈,chen@example.com,008613700137000,,Guangdong,广州市,,,,\n"  # 0086: phonenumbers' slow path
    "全角,ｚｈａｎｇ@example.com,１３６００１３６０００,,浙江省,杭州,,,,\n"  # full-width characters
    "Inner,inner@example.com,,, Inner Mongolia ,呼和浩特市,,,,\n"
    "京,jing@example.com,,,北京,,,,,\n"
    # rejections
    "坏邮箱,not-an-email,,,,,,,,\n"
    "坏手机,,12345,,,,,,,\n"
    "无联系方式,,,,,,,,,\n"
    "坏同意,ok@example.com,,,,,也许,,,\n"
    '=HYPERLINK("x"),bad@,,,,,,,,\n'
    "\n"  # blank lines are not rows, but they count in row numbers
    # duplicates inside the file (email case, then the same mobile with no email)
    "赵一,zhao@example.com,,,,,,,,\n"
    "赵一,ZHAO@example.com,13500135000,赵氏,,,否,,华南,\n"
    "赵,Zhao@Example.com,135 0013 5000,,,,,,,\n"
    # the second row of a pair reaching one contact through its mobile while bringing another email
    "钱,qian@example.com,13300133000,,,,,,,\n"
    "钱二,qian2@example.com,13300133000,,,,,,,\n"
    # existing contacts: by email, by mobile, a mobile owned by someone else, an erased person
    "老客户,old@example.com,,新公司,四川,成都市,,,,经理\n"
    "手机老客户,brand-new@example.com,13200132000,,,,,,,\n"
    "普通老客户,Plain-Old@example.com,,新公司,广东,广州市,,,老客户,\n"
    "冲突,old2@example.com,13100131000,,,,,,,\n"
    "被删除,erased@example.com,,,,,,,,\n"
    # cells COPY must escape, a ragged row, a JSON-looking cell
    'Back\\slash,tab@example.com,,"a\tb",,,,,,"line\nbreak"\n'
    "短,short@example.com\n"
    'Json,json@example.com,,"{""a"": 1}",,,,,,x\x1fy\n'
)
MAPPING = {
    "0": "name",
    "1": "email",
    "2": "mobile",
    "3": "company",
    "4": "province",
    "5": "city",
    "6": "consent_email",
    "7": "consent_sms",
    "8": "tags",
    "9": "attr:职位",
}


def _seed() -> None:
    db.session.add_all(
        [
            Contact(email="old@example.com", company="旧公司", attributes={"职位": ""}),
            Contact(email="old-mobile@example.com", mobile="+8613200132000"),
            Contact(email="old2@example.com"),
            Contact(email="plain-old@example.com", province="上海市"),
            Contact(email="someone@example.com", mobile="+8613100131000"),
            Contact(mobile="+8613300133000", name="钱的手机"),
        ]
    )
    db.session.flush()
    db.session.add(ContactConsent(contact_id=db.session.scalar(select(Contact.id).limit(1)), channel="email"))
    db.session.add(Suppression(kind="email", value_hash=suppression_hash("email", "erased@example.com"), reason="x"))
    db.session.commit()


def _reset() -> None:
    for model in (ContactTag, Tag, ContactConsent, Suppression, Contact):
        db.session.execute(delete(model))
    db.session.commit()


def _snapshot(job) -> dict:
    contacts = {}
    for contact in db.session.scalars(select(Contact)):
        contacts[(contact.email, contact.mobile)] = (
            {c.name: getattr(contact, c.key) for c in Contact.__table__.columns if c.name not in _VOLATILE},
            sorted(
                (c.channel, c.status, c.source[:7])
                for c in db.session.scalars(select(ContactConsent).where(ContactConsent.contact_id == contact.id))
            ),
            sorted(
                db.session.scalars(select(Tag.name).join(ContactTag).where(ContactTag.contact_id == contact.id)).all()
            ),
        )
    counts = (job.rows, job.created, job.updated, job.unchanged, job.rejected)
    return {"contacts": contacts, "counts": counts, "report": importing.report_path(job).read_text("utf-8-sig")}


_VOLATILE = {"id", "created_at", "updated_at"}


def _import_both_ways(app, import_file, monkeypatch, data: bytes, policy: str, consent: str):
    results = []
    for staged in (False, True):
        with app.app_context():
            _reset()
            _seed()
        monkeypatch.setattr(importing, "stages_in_sql", lambda path, staged=staged: staged)
        job = import_file(data, mapping=MAPPING, policy=policy, consent=consent)
        with app.app_context():
            results.append(_snapshot(job))
    return results


@pytest.fixture
def postgres_only(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("the staged import is the PostgreSQL path")


@pytest.mark.parametrize(("policy", "consent"), [("fill", "none"), ("overwrite", "granted"), ("fill", "withdrawn")])
def test_staged_import_equals_row_by_row_import(app, import_file, monkeypatch, postgres_only, policy, consent):
    row_by_row, staged = _import_both_ways(app, import_file, monkeypatch, (HEADER + TRICKY).encode(), policy, consent)
    assert staged["counts"] == row_by_row["counts"]
    assert staged["report"] == row_by_row["report"]
    assert staged["contacts"] == row_by_row["contacts"]


def test_staged_import_equals_row_by_row_across_batches(app, import_file, monkeypatch, postgres_only):
    # Duplicates near and across the 2,000-row batch boundaries, and bad rows among them.
    lines = [HEADER]
    for n in range(4500):
        k = n - 3 if n % 7 == 6 else n - 2100 if n % 11 == 10 and n > 2100 else n
        email = f"u{k}@example.com" if n % 50 else "broken@"
        lines.append(f"客户{n},{email},1{3 + k % 7}{k:09d},公司{n % 13},上海,,,,t{n % 3},\n")
    row_by_row, staged = _import_both_ways(app, import_file, monkeypatch, "".join(lines).encode(), "overwrite", "none")
    assert staged["counts"] == row_by_row["counts"]
    assert staged["report"] == row_by_row["report"]
    assert staged["contacts"] == row_by_row["contacts"]


def test_the_postgresql_csv_import_goes_through_the_stage(app, import_file, monkeypatch, postgres_only):
    used = []
    original = importing_staged.import_staged
    monkeypatch.setattr(importing_staged, "import_staged", lambda *a: used.append(1) or original(*a))
    job = import_file((HEADER + TRICKY).encode(), mapping=MAPPING)
    # Every line is a row (the blank one counted as blank), but for the quoted line break.
    assert used and job.rows == TRICKY.count("\n") - 1 and job.blank == 1


@pytest.mark.parametrize(
    "cells",
    [["a", "b"], ["", ""], ["x\x1fy", "z"], ["\x1estarts", "with the mark"], ["王小明", "tab\there", "back\\slash"]],
)
def test_cells_survive_packing(cells):
    assert importing_staged.unpack_cells(importing_staged.pack_cells(cells)) == cells


def test_copy_lines_escape_what_copy_would_misread():
    line = importing_staged.copy_line(["a\tb", None, "c\\d", "e\nf\rg"])
    assert line == "a\\tb\t\\N\tc\\\\d\te\\nf\\rg\n"
    assert importing_staged.copy_line(["plain", None], escape=False) == "plain\t\\N\n"
    assert importing_staged.needs_escaping("a\\b") and not importing_staged.needs_escaping("王小明,abc")
