import csv
import io
import json

import pytest
from openpyxl import Workbook
from sqlalchemy import func, select

from portal.audience import importing
from portal.audience.models import Contact, ContactConsent, ContactTag, Tag
from portal.extensions import db

HEADER = "姓名,邮箱,手机,公司,行业,省份,城市\n"
ROWS = (
    "王小明,wang@example.com,13800138000,上海云启科技,科技,上海,上海市\n"
    "李华,li.hua@example.com,13900139000,深圳前海贸易,零售,广东,深圳市\n"
    "Emily Chen,emily@example.com,,Northwind,Retail,Guangdong,Guangzhou\n"
)


def contacts(app):
    with app.app_context():
        return {c.email or c.mobile: c for c in db.session.scalars(select(Contact))}


def test_utf8_csv_is_imported_with_normalised_fields(app, import_file):
    job = import_file((HEADER + ROWS).encode("utf-8"))
    assert (job.rows, job.created, job.updated, job.unchanged, job.rejected) == (3, 3, 0, 0, 0)
    wang = contacts(app)["wang@example.com"]
    assert (wang.province, wang.city, wang.mobile) == ("上海市", "上海", "+8613800138000")
    assert contacts(app)["emily@example.com"].province == "广东省"


def test_gbk_file_without_bom_is_detected(app, import_file):
    job = import_file((HEADER + ROWS).encode("gbk", errors="replace").replace(b"Emily", b"Emily"))
    assert job.encoding == "gb18030"
    assert job.created == 3
    assert contacts(app)["li.hua@example.com"].name == "李华"


def test_utf8_with_bom_header_is_recognised(app, import_file):
    job = import_file(("\ufeff" + HEADER + ROWS).encode("utf-8"))
    assert job.encoding == "utf-8-sig" and job.created == 3
    assert contacts(app)["wang@example.com"].name == "王小明"


def test_bad_rows_are_rejected_one_by_one_with_reasons(app, import_file):
    data = HEADER + ROWS + "坏邮箱,not-an-email,,,,,\n无联系方式,,,,,,\n坏手机,,12345,,,,\n"
    job = import_file(data.encode())
    assert (job.rows, job.created, job.rejected) == (6, 3, 3)
    with app.app_context():
        report = list(csv.reader(io.StringIO(importing.report_path(job).read_text("utf-8-sig"))))
    reasons = {row[2]: json.loads(row[1]) for row in report[1:]}
    assert reasons["坏邮箱"] == [["email_invalid", {"value": "not-an-email"}]]
    assert reasons["无联系方式"] == [["contact_missing", {}]]
    assert reasons["坏手机"] == [["mobile_invalid", {"value": "12345"}]]
    assert job.created + job.updated + job.unchanged + job.merged + job.rejected + job.blank == job.rows


def test_duplicates_inside_the_file_become_one_contact(app, import_file):
    data = HEADER + "王小明,wang@example.com,,,,,\n王小明,WANG@example.com,13800138000,上海云启,,,\n"
    job = import_file(data.encode())
    assert (job.rows, job.created, job.merged) == (2, 1, 1)
    wang = contacts(app)["wang@example.com"]
    assert wang.mobile == "+8613800138000" and wang.company == "上海云启"


def test_reimporting_the_same_file_changes_nothing(app, import_file):
    import_file((HEADER + ROWS).encode())
    job = import_file((HEADER + ROWS).encode())
    assert (job.created, job.updated, job.unchanged, job.rejected) == (0, 0, 3, 0)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Contact)) == 3


def test_fill_keeps_existing_values_and_overwrite_replaces_them(app, import_file):
    import_file((HEADER + ROWS).encode())
    changed = HEADER + "王小明,wang@example.com,,新公司,,,\n"
    assert import_file(changed.encode(), policy="fill").unchanged == 1
    assert contacts(app)["wang@example.com"].company == "上海云启科技"
    assert import_file(changed.encode(), policy="overwrite").updated == 1
    assert contacts(app)["wang@example.com"].company == "新公司"


def test_matching_by_mobile_when_the_email_is_new(app, import_file):
    import_file((HEADER + ROWS).encode())
    job = import_file((HEADER + "王小明,wang.new@example.com,138 0013 8000,,,,\n").encode())
    # Matched by mobile; "fill" keeps the email the contact already has.
    assert (job.created, job.updated, job.unchanged) == (0, 0, 1)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Contact)) == 3


def test_default_consent_applies_only_to_rows_without_a_consent_column(app, import_file):
    data = "邮箱,同意\na@example.com,是\nb@example.com,否\nc@example.com,\n"
    import_file(data.encode(), consent="granted")
    with app.app_context():
        status = {
            email: s
            for email, s in db.session.execute(
                select(Contact.email, ContactConsent.status)
                .join(ContactConsent)
                .where(ContactConsent.channel == "email")
            )
        }
    assert status == {"a@example.com": "granted", "b@example.com": "withdrawn", "c@example.com": "granted"}


def test_without_a_consent_choice_new_contacts_have_no_consent(app, import_file):
    import_file((HEADER + ROWS).encode())
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ContactConsent)) == 0


def test_custom_columns_become_attributes_and_tags_are_added(app, import_file):
    data = '邮箱,职位,标签\na@example.com,市场总监,"高意向客户，华东"\n'
    import_file(data.encode())
    with app.app_context():
        contact = db.session.scalar(select(Contact))
        assert contact.attributes == {"职位": "市场总监"}
        names = set(db.session.scalars(select(Tag.name).join(ContactTag)))
    assert names == {"高意向客户", "华东"}


def test_formula_cells_are_neutralised_in_the_rejected_rows_report(app, import_file):
    job = import_file((HEADER + '=HYPERLINK("http://evil"),bad,,,,,\n').encode())
    with app.app_context():
        report = importing.report_path(job).read_text("utf-8-sig")
    assert "'=HYPERLINK" in report


def test_empty_file_is_refused_and_header_only_imports_nothing(app, import_file):
    with pytest.raises(importing.ImportRefused):
        import_file(b"")
    job = import_file(HEADER.encode())
    assert (job.rows, job.created, job.rejected) == (0, 0, 0)


def test_xlsx_file_is_imported(app, import_file):
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["姓名", "邮箱", "手机", "省份"])
    sheet.append(["陈分析", "chen@example.com", 13700137000, "浙江"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    job = import_file(buffer.getvalue(), name="联系人.xlsx")
    assert job.created == 1
    chen = contacts(app)["chen@example.com"]
    assert chen.mobile == "+8613700137000" and chen.province == "浙江省"


def test_a_20_mb_file_is_streamed_and_counted_exactly(app, import_file):
    lines = [HEADER]
    for n in range(210_000):
        lines.append(f"客户{n},user{n}@example.com,,公司{n % 97},科技,上海,上海\n")
    data = "".join(lines).encode()
    assert len(data) > 20 * 1024 * 1024 * 0.5  # ~11 MB of UTF-8 text with Chinese
    data = data + data[len(HEADER.encode()) :]  # the same rows again: > 20 MB, every second half a duplicate
    assert len(data) > 20 * 1024 * 1024
    job = import_file(data)
    assert (job.rows, job.created, job.merged) == (420_000, 210_000, 210_000)


def test_erased_person_is_never_imported_again(app, import_file, make_user):
    from datetime import UTC, datetime

    from portal.audience import privacy
    from tests.audience.conftest import actor

    import_file((HEADER + ROWS).encode())
    admin = make_user("administrator")
    with app.app_context():
        wang = db.session.scalar(select(Contact).where(Contact.email == "wang@example.com"))
        privacy.erase_person(actor(admin), wang.id, datetime.now(UTC))
    job = import_file((HEADER + ROWS).encode())
    assert job.rejected == 1 and job.unchanged == 2
    with app.app_context():
        report = importing.report_path(job).read_text("utf-8-sig")
    assert "suppressed" in report


def test_rejected_rows_report_is_downloadable_from_the_result_page(app, client, sign_in, manager, import_file):
    job = import_file((HEADER + "坏,bad,,,,,\n").encode())
    sign_in(manager)
    page = client.get(f"/audience/imports/{job.id}").get_data(as_text=True)
    assert 'id="rejected">1<' in page
    report = client.get(f"/audience/imports/{job.id}/rejected.csv")
    assert report.status_code == 200 and "bad" in report.get_data(as_text=True)


def test_rows_chained_by_email_then_mobile_merge_into_one_contact(app, import_file):
    # Row 2 gives the contact of row 1 a mobile; row 3 has only that mobile: all one person.
    data = HEADER + (
        "王小明,wang@example.com,,,,,\n王小明,wang@example.com,13800138000,,,,\n王小明,,13800138000,云启,,,\n"
    )
    job = import_file(data.encode())
    assert (job.rows, job.created, job.rejected) == (3, 1, 0)
    wang = contacts(app)["wang@example.com"]
    assert wang.mobile == "+8613800138000" and wang.company == "云启"


@pytest.mark.parametrize(("first", "last"), [("否", "是"), ("是", "否"), ("否", ""), ("", "否")])
def test_a_refusal_wins_over_a_grant_even_batches_apart(app, import_file, first, last):
    others = "".join(f"user{n}@example.com,\n" for n in range(importing.BATCH_SIZE + 500))
    data = f"邮箱,营销同意\nwang@example.com,{first}\n{others}WANG@example.com,{last}\n"
    job = import_file(data.encode(), consent="granted")
    assert (job.created, job.merged) == (importing.BATCH_SIZE + 501, 1)
    with app.app_context():
        consent = dict(
            db.session.execute(
                select(ContactConsent.channel, ContactConsent.status)
                .join(Contact)
                .where(Contact.email == "wang@example.com")
            ).all()
        )
    assert consent["email"] == "withdrawn"
    assert consent.get("sms") is None  # the default never reaches someone whose rows say something


def test_wecom_customer_ids_and_owners_are_imported(app, import_file):
    data = (
        "姓名,手机,企业微信客户ID,企微跟进人\n王小明,13800138000,wmABCdef123,zhangsan\n李华,13900139000,,\n"
    ).encode()
    job = import_file(data)
    assert (job.created, job.rejected) == (2, 0)
    found = contacts(app)
    assert (found["+8613800138000"].wecom_external_userid, found["+8613800138000"].wecom_owner_userid) == (
        "wmABCdef123",
        "zhangsan",
    )
    assert (found["+8613900139000"].wecom_external_userid, found["+8613900139000"].wecom_owner_userid) == ("", "")
