import io
import re
import time

import pytest
from openpyxl import Workbook
from playwright.sync_api import expect
from sqlalchemy import select

from portal.audience.models import Contact, ImportJob
from portal.extensions import db


def chinese_xlsx() -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["姓名", "邮箱", "手机号码", "公司名称", "所属行业", "省份", "城市", "职位"])
    sheet.append(["王小明", "wang@example.com", 13800138000, "上海云启科技", "科技", "上海", "上海市", "市场总监"])
    sheet.append(["李华", "li@example.com", 13900139000, "深圳前海贸易", "零售", "广东", "深圳市", "采购经理"])
    sheet.append(["坏数据", "not-an-email", None, None, None, None, None, None])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_import_through_the_pages_and_a_real_worker(app, client, login_as, start_worker):
    login_as("marketing_manager")
    response = client.post(
        "/audience/imports",
        data={"file": (io.BytesIO(chinese_xlsx()), "客户名单.xlsx")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    mapping_url = response.headers["Location"]
    page = client.get(mapping_url).get_data(as_text=True)
    assert "王小明" in page and 'value="email" selected' in page and 'value="attr:职位" selected' in page
    form = {
        f"col-{i}": f
        for i, f in enumerate(["name", "email", "mobile", "company", "industry", "province", "city", "attr:职位"])
    }
    response = client.post(mapping_url, data={**form, "merge_policy": "fill", "default_consent": "granted"})
    assert response.status_code == 303
    start_worker()
    result_url = response.headers["Location"]
    for _ in range(100):
        html = client.get(result_url, headers={"HX-Request": "true"}).get_data(as_text=True)
        if 'id="rows"' in html:
            break
        time.sleep(0.2)
    assert 'id="rows">3<' in html and 'id="created">2<' in html and 'id="rejected">1<' in html
    with app.app_context():
        wang = db.session.scalar(select(Contact).where(Contact.email == "wang@example.com"))
        assert wang.attributes == {"职位": "市场总监"} and wang.province == "上海市"
        assert db.session.scalar(select(ImportJob.status)) == "done"


def test_contact_page_shows_timeline_tags_score_and_stage(app, client, login_as):
    login_as("operations_specialist")
    from portal.audience import service

    with app.app_context():
        contact = Contact(email="t@example.com", name="赵六", score=72, lifecycle_stage="growing")
        db.session.add(contact)
        db.session.commit()
        service.record_event(contact.id, "download", properties={"asset": "白皮书"})
        contact_id = contact.id
    client.post(f"/audience/contacts/{contact_id}/tags", data={"tag": "高意向客户"})
    html = client.get(f"/audience/contacts/{contact_id}").get_data(as_text=True)
    assert "赵六" in html and "高意向客户" in html and "下载" in html and "成长期" in html
    assert "download" not in html  # the event kind is shown by its label, never its code
    assert "77" in html  # 72 + 5 for the download


def test_contacts_list_filters_by_province_spelling(app, client, login_as):
    login_as("operations_specialist")
    with app.app_context():
        db.session.add_all(
            [
                Contact(email="sh@example.com", name="上海客户", province="上海市"),
                Contact(email="bj@example.com", name="北京客户", province="北京市"),
            ]
        )
        db.session.commit()
    html = client.get("/audience/contacts?province=上海").get_data(as_text=True)
    assert "上海客户" in html and "北京客户" not in html


@pytest.mark.browser
def test_manager_imports_a_chinese_excel_file_in_the_browser(
    app, browser_page, browser_login_as, live_server, start_worker, tmp_path
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    start_worker()
    file = tmp_path / "客户名单.xlsx"
    file.write_bytes(chinese_xlsx())
    page.goto(live_server + "/audience/imports")
    page.set_input_files("input[type=file]", str(file))
    page.get_by_role("button", name="上传并映射字段").click()
    page.wait_for_url(re.compile(r"/mapping$"))
    assert "王小明" in page.locator("#mapping").inner_text()
    page.get_by_role("button", name="开始导入").click()
    page.wait_for_selector("#rows", timeout=30000)
    assert page.locator("#created").inner_text() == "2"
    assert page.locator("#rejected").inner_text() == "1"


@pytest.mark.browser
def test_picking_another_encoding_changes_the_preview_in_the_browser(
    app, browser_page, browser_login_as, live_server, start_worker, tmp_path
):
    page = browser_page
    browser_login_as(page, "marketing_manager")
    start_worker()
    file = tmp_path / "台湾客户.csv"
    file.write_bytes("姓名,email\n張偉,zhang@example.com\n".encode("big5"))
    page.goto(live_server + "/audience/imports")
    page.set_input_files("input[type=file]", str(file))
    page.get_by_role("button", name="上传并映射字段").click()
    page.wait_for_url(re.compile(r"/mapping$"))
    assert "張偉" not in page.locator("#mapping").inner_text()  # read as GB18030 at first
    page.get_by_label("文件编码").select_option("big5")
    # Playwright's own polling: wait_for_function evals its string in the page, which the CSP forbids.
    expect(page.locator("#mapping")).to_contain_text("張偉")
    page.get_by_role("button", name="开始导入").click()
    page.wait_for_selector("#rows", timeout=30000)
    assert page.locator("#created").inner_text() == "1"
