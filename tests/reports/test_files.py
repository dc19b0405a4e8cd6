"""The PDF and the workbook show the same figures as the dashboard."""

import shutil
import subprocess

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader

from portal import storage
from portal.auth.models import User
from portal.extensions import db
from portal.reports import service
from portal.reports.models import ReportKind, ReportStatus
from tests.reports.conftest import CAMPAIGN_NAME


def build(report_data, kind, **params):
    manager = db.session.get(User, report_data["manager"])
    report = service.Report(
        kind=kind,
        params={"campaign_ids": [report_data["campaign"]], **params},
        created_by_id=manager.id,
        title=f"营销活动报告：{CAMPAIGN_NAME}",
    )
    db.session.add(report)
    db.session.commit()
    report = service.build_report_file(report.id)
    assert report.status == ReportStatus.READY
    return storage.local_path(service.AREA, report.file_name)


def pdf_text(path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(path).pages)


def test_pdf_has_the_chinese_title_figures_goal_gap_alert_and_page_numbers(app_ctx, report_data, tmp_path):
    path = build(report_data, ReportKind.CAMPAIGN_PDF)
    text = pdf_text(path)
    assert f"营销活动报告：{CAMPAIGN_NAME}" in text
    for figure in ("62.5%", "60.0%", "40.0%", "66.7%", "33.3%", "¥600.00", "¥1,200.00", "100.0%"):
        assert figure in text
    assert "+3.3" in text  # conversion rate 33.3 against a target of 30
    assert "退订率超过 2%" in text
    assert "1 / " in text


def test_a_pdf_page_renders_to_an_image(app_ctx, report_data, tmp_path):
    path = build(report_data, ReportKind.CAMPAIGN_PDF)
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) not installed: rendering not checked")
    subprocess.run(
        ["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "2", str(path), str(tmp_path / "page")],
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in tmp_path.glob("page*.png"))


def test_workbook_has_the_same_figures_with_number_formats(app_ctx, report_data):
    path = build(report_data, ReportKind.CAMPAIGN_XLSX)
    workbook = load_workbook(path)
    summary = {row[0].value: row[1] for row in workbook.worksheets[0].iter_rows(min_row=2)}
    assert summary["送达率"].value == pytest.approx(5 / 8) and summary["送达率"].number_format == "0.0%"
    assert summary["送达"].value == 5 and summary["送达"].number_format == "#,##0"
    assert summary["成本"].value == 600 and "¥" in summary["成本"].number_format
