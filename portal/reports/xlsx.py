"""The same figures as an Excel workbook (openpyxl): one sheet per table, raw numbers with
number formats (integer, percent, currency), so that people can compute with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask_babel import gettext as _

from portal.reports.formatting import (
    DEFINITIONS,
    DIMENSION_LABELS,
    DIMENSION_TITLES,
    EXCEL_FORMATS,
    FUNNEL_LABELS,
    GOAL_LABELS,
    GROUP_COLUMNS,
    KPIS,
    TRACKING_COLUMNS,
    Column,
    cell,
    goal_kind,
    group_label,
)
from portal.reports.metrics import Figures, Metrics


def _safe(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is written as plain text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _sheet(workbook, title: str, header: list[str], rows: list[list[tuple[Any, str]]]) -> None:
    from openpyxl.styles import Font

    sheet = workbook.create_sheet(title[:31])
    sheet.append(header)
    for header_cell in sheet[1]:
        header_cell.font = Font(bold=True)
    for row in rows:
        sheet.append([_safe(value) for value, _kind in row])
        for target, (_value, kind) in zip(sheet[sheet.max_row], row, strict=True):
            target.number_format = EXCEL_FORMATS.get(kind, "General")
    sheet.freeze_panes = "B2"
    for index, _title in enumerate(header, start=1):
        sheet.column_dimensions[sheet.cell(1, index).column_letter].width = 24 if index == 1 else 14


def _metric_rows(rows: list[Metrics], dimension: str, columns: tuple[Column, ...]) -> list[list[tuple[Any, str]]]:
    return [[(group_label(dimension, m), "text")] + [(cell(m, c), c.kind) for c in columns] for m in rows]


def tracking_rows(campaigns: list[Metrics]) -> list[list[tuple[Any, str]]]:
    return _metric_rows(campaigns, "campaign", TRACKING_COLUMNS)


def build_workbook(path: Path, figures: Figures, tracking_only: bool = False) -> None:
    """Write the workbook; `tracking_only` writes just the campaign tracking table."""
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.remove(workbook.active)
    campaigns = figures.groups.get("campaign", [])
    tracking_header = [_("Campaign")] + [str(c.label) for c in TRACKING_COLUMNS]
    if tracking_only:
        _sheet(workbook, _("Campaign tracking"), tracking_header, tracking_rows(campaigns))
        workbook.save(path)
        return
    _sheet(
        workbook,
        _("Summary"),
        [_("Figure"), _("Value")],
        [[(str(c.label), "text"), (cell(figures.total, c), c.kind)] for c in KPIS],
    )
    series = figures.series
    _sheet(
        workbook,
        _("Time series"),
        [_("Time"), _("Delivered"), _("Opens"), _("Clicks")],
        [
            [(bucket, "text"), (sent, "int"), (opens, "int"), (clicks, "int")]
            for bucket, sent, opens, clicks in zip(
                series.buckets, series.sent, series.opens, series.clicks, strict=True
            )
        ],
    )
    first = figures.funnel[0][1]
    _sheet(
        workbook,
        _("Funnel"),
        [_("Stage"), _("Count"), _("Share of delivered")],
        [
            [(str(FUNNEL_LABELS[key]), "text"), (value, "int"), (value / first if first else None, "pct")]
            for key, value in figures.funnel
        ],
    )
    _sheet(workbook, _("Campaign tracking"), tracking_header, tracking_rows(campaigns))
    for dimension, rows in figures.groups.items():
        header = [str(DIMENSION_LABELS[dimension])] + [str(c.label) for c in GROUP_COLUMNS]
        _sheet(workbook, str(DIMENSION_TITLES[dimension]), header, _metric_rows(rows, dimension, GROUP_COLUMNS))
    _sheet(
        workbook,
        _("Target vs actual"),
        [_("Campaign"), _("Goal"), _("Days"), _("Target"), _("Actual"), _("Gap")],
        [
            [
                (goal.campaign, "text"),
                (str(GOAL_LABELS.get(goal.metric, goal.metric)), "text"),
                (goal.days, "int"),
                (goal.target, goal_kind(goal.metric)),
                (goal.actual, goal_kind(goal.metric)),
                (goal.gap, goal_kind(goal.metric)),
            ]
            for goal in figures.goals
        ],
    )
    _sheet(
        workbook,
        _("Alerts that fired"),
        [_("When"), _("Campaign"), _("Reason")],
        [
            [(alert.at.strftime("%Y-%m-%d %H:%M UTC"), "text"), (alert.campaign, "text"), (alert.reason, "text")]
            for alert in figures.alerts
        ],
    )
    _sheet(
        workbook,
        _("Definitions"),
        [_("Term"), _("Meaning")],
        [[(str(term), "text"), (str(meaning), "text")] for term, meaning in DEFINITIONS],
    )
    workbook.save(path)
