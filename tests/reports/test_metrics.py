"""The figures, against data whose answers were worked out by hand (tests/reports/conftest.py)."""

import pytest

from portal.reports import metrics
from tests.reports.conftest import FIGURES


def figures_for(report_data, **params):
    return metrics.compute(metrics.Filters.from_params({"campaign_ids": [report_data["campaign"]], **params}))


def test_campaign_totals_match_the_hand_computed_figures(app_ctx, report_data):
    total = figures_for(report_data).total
    assert {name: getattr(total, name) for name in FIGURES} == FIGURES
    assert total.delivery_rate == pytest.approx(5 / 8)
    assert total.open_rate == pytest.approx(3 / 5)
    assert total.click_rate == pytest.approx(2 / 5)
    assert total.click_to_open_rate == pytest.approx(2 / 3)
    assert total.conversion_rate == pytest.approx(1 / 3)


def test_cost_revenue_cpa_and_roi_come_from_the_entries_and_purchases(app_ctx, report_data):
    total = figures_for(report_data).total
    assert total.cost == 600
    assert total.attributed_revenue == 1000
    assert total.revenue == 1200
    assert total.cost_per_acquisition == 600
    assert total.roi == pytest.approx(1.0)


def test_steps_count_their_own_messages_and_conversions(app_ctx, report_data):
    steps = {m.key: m for m in figures_for(report_data).groups["step"]}
    first, second = steps[str(report_data["step1"])], steps[str(report_data["step2"])]
    assert (first.audience, first.delivered, first.opens, first.clicks, first.conversions) == (5, 3, 3, 2, 1)
    assert (second.audience, second.delivered, second.opens, second.conversions) == (3, 2, 0, 1)
    assert first.attributed_revenue == second.attributed_revenue == 1000


def test_channels_count_a_converted_contact_once(app_ctx, report_data):
    channels = {m.key: m for m in figures_for(report_data).groups["channel"]}
    assert channels["email"].delivered == 3 and channels["email"].conversions == 1
    assert channels["sms"].delivered == 2 and channels["sms"].reached == 2


def test_groups_by_contact_fields_and_tags(app_ctx, report_data):
    groups = figures_for(report_data).groups
    province = {m.key: m for m in groups["province"]}
    assert (province["上海市"].audience, province["上海市"].reached, province["上海市"].conversions) == (4, 2, 1)
    assert (province["浙江省"].audience, province["浙江省"].delivered, province["浙江省"].clicks) == (3, 1, 1)
    assert (province["北京市"].audience, province["北京市"].delivered) == (1, 0)
    tags = {m.key: m for m in groups["tag"]}
    assert tags["VIP"].reached == 2 and tags[""].reached == 1
    industry = {m.key: m for m in groups["industry"]}
    assert industry["科技"].opens == 2


def test_groups_by_region_add_up_the_provinces_of_each_region(app_ctx, report_data):
    groups = figures_for(report_data).groups
    province = {m.key: m for m in groups["province"]}
    region = {m.key: m for m in groups["region"]}
    assert set(region) == {"华东", "华北"}
    east = (province["上海市"], province["浙江省"])
    assert region["华东"].audience == 7 and region["华北"].audience == 1
    assert region["华东"].delivered == sum(p.delivered for p in east)
    assert region["华东"].conversions == sum(p.conversions for p in east)


def test_the_date_range_selects_messages_by_when_they_were_sent(app_ctx, report_data):
    total = figures_for(report_data, date_from="2026-03-03", date_to="2026-03-03").total
    assert (total.attempted, total.delivered, total.opens) == (3, 2, 0)


def test_time_series_counts_first_opens_and_clicks_per_local_day(app_ctx, report_data):
    series = figures_for(report_data).series
    assert series.buckets == ["2026-03-02", "2026-03-03"]
    assert series.sent == [3, 2]
    assert series.opens == [3, 0]
    assert series.clicks == [2, 0]


def test_goal_target_against_actual_with_the_gap(app_ctx, report_data):
    (goal,) = figures_for(report_data).goals
    assert goal.target == 30
    assert goal.actual == pytest.approx(100 / 3)
    assert goal.gap == pytest.approx(100 / 3 - 30)
    assert goal.met


def test_alerts_that_fired_are_listed(app_ctx, report_data):
    (alert,) = figures_for(report_data).alerts
    assert alert.reason == "退订率超过 2%"


def test_all_campaigns_when_none_is_chosen(app_ctx, report_data):
    found = metrics.compute(metrics.Filters())
    assert found.total.delivered == 6
    assert {m.label for m in found.groups["campaign"]} == {"春季新品发布会", "Other campaign"}
