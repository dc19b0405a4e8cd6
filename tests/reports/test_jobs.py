"""Reports built by real workers: progress, history, notification, audited download; monthly
schedules; the backup export."""

import csv
import io
import re
import time
import zipfile
from datetime import UTC, datetime

from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import select

from portal.auth.models import User
from portal.extensions import db
from portal.reports import service
from portal.reports.models import Report, ReportSchedule
from tests.reports.conftest import CAMPAIGN_NAME


def wait_for_report(app, report_id: int, timeout: float = 60) -> Report:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            report = db.session.get(Report, report_id)
            if report.status in ("ready", "failed"):
                db.session.expunge(report)
                return report
        time.sleep(0.2)
    raise AssertionError(f"report {report_id} not built after {timeout}s")


def kpis(html: str) -> dict[str, str]:
    return dict(re.findall(r'id="kpi-([a-z_]+)">([^<]*)<', html))


def test_dashboard_pdf_and_workbook_show_the_same_figures(app, client, login_as, report_data, start_worker):
    user_id = login_as("marketing_manager")
    query = f"campaign_ids={report_data['campaign']}"
    shown = kpis(client.get(f"/reports/?{query}").get_data(as_text=True))
    built = {}
    for kind in ("campaign_pdf", "campaign_xlsx"):
        response = client.post(
            "/reports/generate", data={"kind": kind, "campaign_ids": report_data["campaign"], "conversion_days": "30"}
        )
        assert response.status_code == 303
        built[kind] = int(response.headers["Location"].rsplit("/", 1)[1])
    page = client.get(f"/reports/{built['campaign_pdf']}").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in page  # polls until the worker is done

    start_worker("reports", burst=True).wait(timeout=120)
    for report_id in built.values():
        assert wait_for_report(app, report_id).status == "ready"
    status = client.get(f"/reports/{built['campaign_pdf']}/status", headers={"HX-Request": "true"})
    assert "every 1s" not in status.get_data(as_text=True) and 'id="report-download"' in status.get_data(as_text=True)

    pdf = client.get(f"/reports/{built['campaign_pdf']}/download")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert CAMPAIGN_NAME in text
    for value in shown.values():
        assert value in text

    workbook = load_workbook(io.BytesIO(client.get(f"/reports/{built['campaign_xlsx']}/download").data))
    from portal.reports.formatting import KPIS, display

    with app.test_request_context():
        from flask_babel import force_locale

        with force_locale("zh_CN"):
            labels = {str(c.label): c for c in KPIS}
    summary = workbook.worksheets[0]
    for label_cell, value_cell in summary.iter_rows(min_row=2, max_col=2):
        column = labels[label_cell.value]
        assert display(value_cell.value, column.kind) == shown[column.attribute]
        assert value_cell.number_format == {"int": "#,##0", "pct": "0.0%", "money": '"¥"#,##0.00'}[column.kind]

    with app.app_context():
        from portal.audit import AuditEvent
        from portal.notify import Notification

        downloads = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "report.downloaded")).all()
        assert {e.actor_id for e in downloads} == {user_id} and len(downloads) == 2
        messages = db.session.scalars(select(Notification.message).where(Notification.user_id == user_id)).all()
        assert any(m.startswith("报告已生成") for m in messages)


def test_history_lists_reports_and_hides_download_from_roles_that_may_not(app, client, login_as, report_data):
    with app.app_context():
        db.session.add(Report(kind="campaign_pdf", title="三月报告", status="ready", file_name="x.pdf", params={}))
        db.session.commit()
    login_as("operations_specialist")
    html = client.get("/reports/history").get_data(as_text=True)
    assert "三月报告" in html and "/download" not in html


def test_a_monthly_schedule_makes_one_report_per_month_and_notifies_the_owner(app, client, login_as, report_data):
    user_id = login_as("marketing_manager")
    response = client.post(
        "/reports/schedules",
        data={
            "kind": "campaign_pdf",
            "name": "月报",
            "campaign_ids": [report_data["campaign"]],
            "day_of_month": "1",
            "conversion_kind": "purchase",
            "conversion_days": "30",
        },
    )
    assert response.status_code == 303
    with app.app_context():
        first = service.run_due_schedules(datetime(2026, 4, 1, 3, 0, tzinfo=UTC))
        again = service.run_due_schedules(datetime(2026, 4, 2, 3, 0, tzinfo=UTC))
        assert len(first) == 1 and again == []
        report = db.session.get(Report, first[0])
        assert report.period == "2026-03" and report.created_by_id == user_id
        assert report.params["date_from"] == "2026-03-01" and report.params["date_to"] == "2026-03-31"
        service.build_report_file(report.id)
        from portal.notify import Notification

        assert db.session.scalar(select(Notification.link).where(Notification.user_id == user_id)) == (
            f"/reports/{report.id}"
        )
    assert "月报 · 2026-03" in client.get("/reports/history").get_data(as_text=True)


def test_a_schedule_of_someone_who_lost_the_right_makes_nothing(app, make_user, report_data):
    with app.app_context():
        analyst = make_user("data_analyst")
        db.session.add(ReportSchedule(kind="campaign_pdf", params={"campaign_ids": [1]}, owner_id=analyst))
        db.session.commit()
        assert service.run_due_schedules(datetime(2026, 4, 1, 3, 0, tzinfo=UTC)) == []


def test_an_administrator_exports_the_backup_zip_built_by_a_worker(app, client, login_as, report_data, start_worker):
    login_as("administrator")
    response = client.post("/reports/backups")
    report_id = int(response.headers["Location"].rsplit("/", 1)[1])
    start_worker("reports", burst=True).wait(timeout=120)
    assert wait_for_report(app, report_id).status == "ready"
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/reports/{report_id}/download").data))
    assert {"tags.csv", "contact_tags.csv", "campaigns.csv", "campaign_results.csv"} <= set(archive.namelist())
    tags = archive.read("contact_tags.csv").decode("utf-8-sig").splitlines()
    assert len(tags) == 3  # header + c1 and c2 tagged VIP
    results = archive.read("campaign_results.csv").decode("utf-8-sig")
    assert CAMPAIGN_NAME in results


def test_a_manager_may_not_download_a_backup(app, client, login_as, report_data):
    with app.app_context():
        db.session.add(Report(kind="backup_zip", title="b", status="ready", file_name="b.zip", params={}))
        db.session.commit()
        report_id = db.session.scalar(select(Report.id))
    login_as("marketing_manager")
    assert client.get(f"/reports/{report_id}/download").status_code == 403
    assert client.get(f"/reports/{report_id}").status_code == 403


def test_building_twice_keeps_the_first_file(app_ctx, report_data):
    manager = db.session.get(User, report_data["manager"])
    report = Report(kind="campaign_xlsx", params={"campaign_ids": [report_data["campaign"]]}, created_by_id=manager.id)
    db.session.add(report)
    db.session.commit()
    first = service.build_report_file(report.id).file_name
    assert service.build_report_file(report.id).file_name == first


def test_every_text_cell_of_the_backup_zip_is_neutralised(app, report_data, tmp_path):
    from datetime import date

    from portal.audience.models import Tag
    from portal.campaigns.models import Campaign
    from portal.reports.models import CampaignCost

    formula = '=HYPERLINK("http://evil.example","x")'
    with app.app_context():
        campaign = db.session.scalar(select(Campaign).where(Campaign.name == CAMPAIGN_NAME))
        campaign.name = formula
        db.session.add(Tag(name="+" + formula[1:]))
        db.session.add(CampaignCost(campaign_id=campaign.id, spent_on=date(2026, 3, 1), note="@" + formula[1:]))
        db.session.commit()
        service.write_backup(tmp_path / "backup.zip", lambda *_: None)
    archive = zipfile.ZipFile(tmp_path / "backup.zip")
    cells = [
        cell
        for name in archive.namelist()
        for row in csv.reader(io.StringIO(archive.read(name).decode("utf-8-sig")))
        for cell in row
    ]
    assert "'" + formula in cells and "'+" + formula[1:] in cells and "'@" + formula[1:] in cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")]
