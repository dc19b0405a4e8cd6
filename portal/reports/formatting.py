"""How each figure is written, once for the page, the PDF and the workbook.

The page and the PDF print `display(value, kind)`; the workbook stores the raw number with
the Excel number format of the same kind, so that all three read the same."""

from __future__ import annotations

from typing import Any, NamedTuple

from flask_babel import lazy_gettext as _l

from portal.reports.metrics import Metrics

# Excel number formats per kind (what openpyxl writes as the cell's number_format).
EXCEL_FORMATS = {"int": "#,##0", "pct": "0.0%", "money": '"¥"#,##0.00', "number": "#,##0.0", "text": "@"}


def display(value: Any, kind: str) -> str:
    """`value` as people read it: 1,234 · 62.5% · ¥1,200.00; "—" for a figure that does not exist."""
    if value is None:
        return "—"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "money":
        return f"¥{value:,.2f}"
    if kind == "number":
        return f"{value:,.1f}"
    return str(value)


class Column(NamedTuple):
    attribute: str  # a Metrics attribute or property
    label: Any  # lazy string
    kind: str  # int | pct | money | text


# What every message-level table and card shows, in this order.
_MESSAGE_FIGURES: tuple[Column, ...] = (
    Column("delivered", _l("Delivered"), "int"),
    Column("delivery_rate", _l("Delivery rate"), "pct"),
    Column("hard_bounces", _l("Hard bounces"), "int"),
    Column("soft_bounces", _l("Soft bounces"), "int"),
    Column("opens", _l("Unique opens"), "int"),
    Column("open_rate", _l("Open rate"), "pct"),
    Column("clicks", _l("Unique clicks"), "int"),
    Column("click_rate", _l("Click rate"), "pct"),
    Column("click_to_open_rate", _l("Click-to-open rate"), "pct"),
    Column("unsubscribes", _l("Unsubscribes"), "int"),
    Column("conversions", _l("Conversions"), "int"),
    Column("conversion_rate", _l("Conversion rate"), "pct"),
)

KPIS: tuple[Column, ...] = (
    Column("audience", _l("Audience"), "int"),
    *_MESSAGE_FIGURES,
    Column("revenue", _l("Revenue"), "money"),
    Column("cost", _l("Cost"), "money"),
    Column("cost_per_acquisition", _l("Cost per acquisition"), "money"),
    Column("roi", _l("ROI"), "pct"),
)

GROUP_COLUMNS: tuple[Column, ...] = (
    Column("audience", _l("Audience"), "int"),
    Column("attempted", _l("Sent"), "int"),
    *_MESSAGE_FIGURES,
    Column("attributed_revenue", _l("Revenue (purchases)"), "money"),
)

# The campaign tracking table: what a manager follows week by week.
TRACKING_COLUMNS: tuple[Column, ...] = (
    Column("reached", _l("Reached"), "int"),
    Column("open_rate", _l("Open rate"), "pct"),
    Column("click_rate", _l("Click rate"), "pct"),
    Column("conversions", _l("Conversions"), "int"),
    Column("cost_per_acquisition", _l("Cost per acquisition"), "money"),
    Column("notes", _l("Notes"), "text"),
)

DIMENSION_LABELS = {
    "campaign": _l("Campaign"),
    "step": _l("Step"),
    "channel": _l("Channel"),
    "province": _l("Province"),
    "region": _l("Region"),
    "industry": _l("Industry"),
    "lifecycle": _l("Lifecycle stage"),
    "tag": _l("Tag"),
}
DIMENSION_TITLES = {
    "campaign": _l("By campaign"),
    "step": _l("By step"),
    "channel": _l("By channel"),
    "province": _l("By province"),
    "region": _l("By region"),
    "industry": _l("By industry"),
    "lifecycle": _l("By lifecycle stage"),
    "tag": _l("By tag"),
}
FUNNEL_LABELS = {
    "delivered": _l("Delivered"),
    "opened": _l("Opened"),
    "clicked": _l("Clicked"),
    "converted": _l("Converted"),
}
GOAL_LABELS = {
    "conversion_rate": _l("Conversion rate"),
    "click_rate": _l("Click rate"),
    "open_rate": _l("Open rate"),
    "mql_count": _l("MQLs"),
    "revenue": _l("Revenue"),
}
CONVERSION_KIND_LABELS = {
    "purchase": _l("Purchase"),
    "form_submit": _l("Form submitted"),
    "download": _l("Download"),
    "webinar_attended": _l("Webinar attended"),
    "sales_consultation": _l("Sales consultation"),
    "mql": _l("Became an MQL"),
}
NOT_SET = _l("(not set)")

# The appendix of the PDF and the last sheet of the workbook.
DEFINITIONS: tuple[tuple[Any, Any], ...] = (
    (_l("Audience"), _l("Messages planned for contacts, minus those excluded at planning.")),
    (_l("Sent"), _l("Messages handed to the receiving server: delivered, bounced or failed.")),
    (_l("Delivered"), _l("Messages the receiving server accepted. Delivery rate = delivered / sent.")),
    (_l("Hard bounces"), _l("Messages refused for good (5xx); the address is suppressed.")),
    (_l("Soft bounces"), _l("Messages that kept being deferred (4xx) until the retries ran out.")),
    (_l("Unique opens"), _l("Delivered messages opened at least once; a click counts as an open.")),
    (_l("Unique clicks"), _l("Delivered messages with at least one tracked click.")),
    (_l("Click-to-open rate"), _l("Unique clicks / unique opens.")),
    (_l("Reached"), _l("Contacts who received at least one message of the campaign (per campaign).")),
    (
        _l("Conversions"),
        _l(
            "Contacts with an event of the chosen kind from the first message the campaign delivered to them "
            "until N days after the last one (for a step: N days after that step's message)."
        ),
    ),
    (_l("Revenue"), _l("The amount of the converting purchases plus the revenue entered for the campaign.")),
    (_l("Cost per acquisition"), _l("Entered cost / conversions.")),
    (_l("ROI"), _l("(Revenue - cost) / cost.")),
    (_l("Goal"), _l("Rate targets are percentages; the gap is the actual minus the target in the same unit.")),
    (_l("Test sends"), _l("Test sends are never counted.")),
)


def cell(metrics: Metrics, column: Column) -> Any:
    return getattr(metrics, column.attribute)


def group_label(dimension: str, metrics: Metrics) -> str:
    from portal.labels import label

    if not metrics.label:
        return str(NOT_SET)
    # Channels and lifecycle stages are stored as codes: show their labels.
    kind = {"channel": "channel", "lifecycle": "stage"}.get(dimension)
    return label(kind, metrics.label) if kind else metrics.label


def goal_kind(metric: str) -> str:
    """Rate goals are in percentage points, revenue in money, MQLs in numbers."""
    return {"revenue": "money", "mql_count": "int"}.get(metric, "number")
