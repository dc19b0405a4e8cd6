"""A marketing manager at the dashboard in Chromium: views the kept-pages tier answers (a
repeat of the page, a grouping asked for again through htmx) look and work as Flask's do."""

from __future__ import annotations

import re

import pytest
from flask import request, request_started
from playwright.sync_api import expect

from tests.test_browser_csp import RECORD_VIOLATIONS


@pytest.mark.browser
def test_a_manager_changes_the_grouping_and_comes_back_to_it(
    app, browser_page, browser_login_as, live_server, report_data
):
    page = browser_page
    page.context.add_init_script(RECORD_VIOLATIONS)
    browser_login_as(page, "marketing_manager", name="王经理")
    by_flask: list[str] = []

    def record(_sender, **_extra):
        by_flask.append(request.full_path)

    request_started.connect(record, app)
    try:
        for _view in range(2):
            page.goto(live_server + "/reports/")
            page.wait_for_load_state("networkidle")
            assert "王经理" in page.locator("header").inner_text()
            assert page.locator("#figures-as-of").inner_text().startswith("数据截至")
        for grouping, title in (("industry", "按行业"), ("province", "按省份"), ("industry", "按行业")):
            with page.expect_response(re.compile(rf"/reports/\?.*grouping={grouping}")) as answer:
                page.select_option("#grouping", grouping)
            assert answer.value.ok
            # htmx swaps the answer in after it arrives: wait for it.
            expect(page.locator("#report-body h2").first).to_have_text(title)
            expect(page).to_have_url(re.compile(rf"grouping={grouping}"))  # the address follows, for the back button
    finally:
        request_started.disconnect(record, app)

    dashboard_views = [path for path in by_flask if path.startswith("/reports/")]
    # Flask made the page once and each grouping once; their second asking came from the tier.
    assert len(dashboard_views) == 3, dashboard_views
    assert page.evaluate("window.__cspViolations") == []
    headings = page.locator("#report-body h2").all_inner_texts()
    assert headings and not [text for text in headings if re.search(r"[A-Za-z]{4,}", text)]
