"""The reports pages: figures, htmx fragments, sorting, costs, permissions on every route."""

import re

import pytest

from portal.extensions import db
from tests.reports.conftest import CAMPAIGN_NAME


def kpis(html: str) -> dict[str, str]:
    return dict(re.findall(r'id="kpi-([a-z_]+)">([^<]*)<', html))


def test_dashboard_shows_the_hand_computed_figures(client, login_as, report_data):
    login_as("data_analyst")
    html = client.get(f"/reports/?campaign_ids={report_data['campaign']}").get_data(as_text=True)
    figures = kpis(html)
    assert figures["delivered"] == "5"
    assert figures["delivery_rate"] == "62.5%"
    assert figures["open_rate"] == "60.0%"
    assert figures["click_to_open_rate"] == "66.7%"
    assert figures["conversion_rate"] == "33.3%"
    assert figures["cost_per_acquisition"] == "¥600.00"
    assert figures["roi"] == "100.0%"
    assert "<svg" in html and 'id="chart-funnel"' in html


def test_filters_answer_htmx_with_the_dashboard_fragment_only(client, login_as, report_data):
    login_as("data_analyst")
    response = client.get(
        f"/reports/?campaign_ids={report_data['campaign']}&grouping=tag&date_from=2026-03-03&date_to=2026-03-03",
        headers={"HX-Request": "true"},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "<html" not in html
    assert html.lstrip().startswith('<div id="report-body">')
    assert kpis(html)["delivered"] == "2"
    assert "VIP" in html
    assert "HX-Request" in response.headers["Vary"]


def test_tracking_table_sorts_by_a_column_either_way(client, login_as, report_data):
    login_as("marketing_manager")
    up = client.get("/reports/tracking?sort=open_rate&order=asc", headers={"HX-Request": "true"}).get_data(as_text=True)
    down = client.get("/reports/tracking?sort=open_rate&order=desc").get_data(as_text=True)
    # 60.0 % against the other campaign's 100.0 %
    assert up.index(CAMPAIGN_NAME) < up.index("Other campaign")
    assert down.index("Other campaign") < down.index(CAMPAIGN_NAME)
    assert "展会 &lt;b&gt;" in down


def test_a_manager_enters_a_cost_and_the_cpa_follows(app, client, login_as, report_data):
    login_as("marketing_manager")
    response = client.post(
        f"/reports/campaigns/{report_data['campaign']}/costs",
        data={"spent_on": "2026-03-05", "cost": "400", "revenue": "", "note": "线下广告"},
    )
    assert response.status_code == 303
    html = client.get(f"/reports/?campaign_ids={report_data['campaign']}").get_data(as_text=True)
    assert kpis(html)["cost_per_acquisition"] == "¥1,000.00"
    with app.app_context():
        from portal.audit import AuditEvent

        assert db.session.query(AuditEvent).filter_by(action="campaign.cost_entered").count() == 1


def test_a_refused_cost_entry_comes_back_with_422(client, login_as, report_data):
    login_as("marketing_manager")
    response = client.post(f"/reports/campaigns/{report_data['campaign']}/costs", data={"spent_on": "2026-03-05"})
    assert response.status_code == 422


ROUTES = [
    ("get", "/reports/"),
    ("get", "/reports/tracking"),
    ("post", "/reports/generate"),
    ("get", "/reports/history"),
    ("get", "/reports/{report}"),
    ("get", "/reports/{report}/status"),
    ("get", "/reports/{report}/download"),
    ("get", "/reports/campaigns/{campaign}/costs"),
    ("post", "/reports/campaigns/{campaign}/costs"),
    ("get", "/reports/schedules"),
    ("post", "/reports/schedules"),
    ("post", "/reports/schedules/{schedule}/delete"),
    ("get", "/reports/backups"),
    ("post", "/reports/backups"),
]
# Who may use each route (by role); everyone else gets 403.
ALLOWED = {
    "/reports/": {"administrator", "marketing_manager", "operations_specialist", "data_analyst"},
    "/reports/tracking": {"administrator", "marketing_manager", "operations_specialist", "data_analyst"},
    "/reports/generate": {"marketing_manager", "data_analyst"},
    "/reports/history": {"administrator", "marketing_manager", "operations_specialist", "data_analyst"},
    "/reports/{report}": {"administrator", "marketing_manager", "operations_specialist", "data_analyst"},
    "/reports/{report}/status": {"administrator", "marketing_manager", "operations_specialist", "data_analyst"},
    "/reports/{report}/download": {"marketing_manager", "data_analyst"},
    "/reports/campaigns/{campaign}/costs": {"marketing_manager"},
    "/reports/schedules": {"administrator", "marketing_manager"},
    "/reports/schedules/{schedule}/delete": {"administrator", "marketing_manager"},
    "/reports/backups": {"administrator"},
}
ROLES = ["administrator", "marketing_manager", "operations_specialist", "reviewer", "data_analyst"]


@pytest.mark.parametrize("role", ROLES)
def test_every_report_route_refuses_roles_without_permission_with_403(app, client, login_as, report_data, role):
    from portal.reports.models import Report, ReportSchedule

    user_id = login_as(role)
    with app.app_context():
        report = Report(kind="campaign_pdf", params={}, title="r", status="ready", file_name="missing.pdf")
        schedule = ReportSchedule(kind="campaign_pdf", params={}, owner_id=user_id)
        db.session.add_all([report, schedule])
        db.session.commit()
        ids = {"report": report.id, "schedule": schedule.id, "campaign": report_data["campaign"]}
    for method, template in ROUTES:
        url = template.format(**ids)
        for headers in ({}, {"HX-Request": "true"}):
            response = getattr(client, method)(url, headers=headers)
            assert response.status_code < 500, (url, response.status_code)
            if role in ALLOWED[template]:
                assert response.status_code != 403, (role, method, url)
            else:
                assert response.status_code == 403, (role, method, url, response.status_code)


def test_anonymous_htmx_requests_get_a_redirect_header_not_a_page(client, report_data):
    response = client.get("/reports/", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/auth/login")
