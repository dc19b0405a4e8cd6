"""The campaign report as a PDF (reportlab): cover, KPI summary, charts, grouped tables, goals
against actuals, alerts that fired, and an appendix of definitions.

Chinese needs a font that has it: a TrueType font from REPORT_FONT_PATH, else Debian's WenQuanYi
Zen Hei, else reportlab's built-in CID font STSong-Light (which every PDF reader can show).
Everything a person typed is XML-escaped before it enters Paragraph markup, and nothing is
fetched from outside: the charts are drawn from the same shapes as the page's SVG."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from flask import current_app
from flask_babel import format_datetime
from flask_babel import gettext as _

from portal.reports import charts
from portal.reports.formatting import (
    CONVERSION_KIND_LABELS,
    DEFINITIONS,
    DIMENSION_LABELS,
    DIMENSION_TITLES,
    GOAL_LABELS,
    GROUP_COLUMNS,
    KPIS,
    cell,
    display,
    goal_kind,
    group_label,
)
from portal.reports.metrics import Figures

DEBIAN_CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
FONT_NAME = "ReportCJK"
CID_FONT = "STSong-Light"
# A grouped table longer than this is cut in the PDF (the workbook has every row).
MAX_ROWS = 40
# The columns that fit a portrait A4 page; the workbook has them all.
PDF_GROUP_COLUMNS = ("audience", "delivered", "delivery_rate", "open_rate", "click_rate", "conversions")

_registered: dict[str, str] = {}


def report_font() -> str:
    """Register (once per process) and return the name of a font that can write Chinese."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.ttfonts import TTFError, TTFont

    configured = current_app.config["REPORT_FONT_PATH"]
    for path in (configured, DEBIAN_CJK_FONT):
        if not path or not Path(path).is_file():
            continue
        if path in _registered:
            return _registered[path]
        try:
            pdfmetrics.registerFont(TTFont(FONT_NAME + str(len(_registered)), path, subfontIndex=0))
        except (TTFError, OSError):
            current_app.logger.warning("report font %s could not be loaded; trying the next", path)
            continue
        _registered[path] = FONT_NAME + str(len(_registered))
        return _registered[path]
    if CID_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
    return CID_FONT


def _numbered_canvas(header: str, footer: str, font: str):
    """A canvas that knows the page count when it writes "page n / m" on every page."""
    from reportlab.lib.colors import HexColor
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen.canvas import Canvas

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                width, height = A4
                self.setFont(font, 8)
                self.setFillColor(HexColor("#5b6476"))
                self.drawString(40, height - 28, header)
                self.setStrokeColor(HexColor("#d5d9e0"))
                self.line(40, height - 34, width - 40, height - 34)
                self.line(40, 40, width - 40, 40)
                self.drawString(40, 28, footer)
                self.drawRightString(width - 40, 28, _("Page %(page)s / %(total)s", page=self._pageNumber, total=total))
                super().showPage()
            super().save()

    return NumberedCanvas


def build_pdf(
    path: Path,
    figures: Figures,
    title: str,
    generated_by: str,
    generated_at: datetime,
    progress: Callable[[int, str], None] | None = None,
) -> None:
    """Write the report for `figures` to `path`."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    font = report_font()
    body = ParagraphStyle("body", fontName=font, fontSize=9.5, leading=14, wordWrap="CJK")
    small = ParagraphStyle("small", parent=body, fontSize=8, leading=11)
    h1 = ParagraphStyle("h1", parent=body, fontSize=24, leading=32, spaceAfter=12)
    h2 = ParagraphStyle("h2", parent=body, fontSize=14, leading=20, spaceBefore=10, spaceAfter=6)

    def para(text: str, style: ParagraphStyle = body) -> Paragraph:
        return Paragraph(escape(text), style)

    def table(rows: list[list[Any]], widths: list[float] | None = None, numeric_from: int = 1) -> Table:
        result = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
        result.setStyle(
            TableStyle(
                [
                    ("FONT", (0, 0), (-1, -1), font, 8.5),
                    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f0f2f6")),
                    ("TEXTCOLOR", (0, 0), (-1, 0), colors.HexColor("#5b6476")),
                    ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#d5d9e0")),
                    ("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ]
            )
        )
        return result

    when = format_datetime(generated_at, "yyyy-MM-dd HH:mm")
    filters = figures.filters
    period = (
        f"{filters.date_from or '…'} – {filters.date_to or '…'}"
        if filters.date_from or filters.date_to
        else _("All dates")
    )
    story: list[Any] = [
        Spacer(1, 60 * mm),
        para(title, h1),
        para(_("Period: %(period)s", period=period)),
        para(
            _(
                "Conversions: %(kind)s within %(days)s days",
                kind=CONVERSION_KIND_LABELS.get(filters.conversion_kind, filters.conversion_kind),
                days=filters.conversion_days,
            )
        ),
        Spacer(1, 6 * mm),
        para(_("Generated by %(name)s on %(when)s", name=generated_by, when=when), small),
        *(
            [para(_("Figures as of %(moment)s", moment=format_datetime(figures.as_of, "yyyy-MM-dd HH:mm")), small)]
            if figures.as_of
            else []
        ),
        PageBreak(),
        para(_("Key figures"), h2),
    ]
    kpis = [[str(c.label), display(cell(figures.total, c), c.kind)] for c in KPIS]
    half = (len(kpis) + 1) // 2
    grid = [left + (kpis[half + i] if half + i < len(kpis) else ["", ""]) for i, left in enumerate(kpis[:half])]
    story.append(table([[_("Figure"), _("Value"), _("Figure"), _("Value")], *grid], [120, 100, 120, 100]))
    if progress:
        progress(60, _("Drawing the charts"))

    for key, chart in charts.report_charts(figures).items():
        story.append(Spacer(1, 4 * mm))
        story.append(KeepTogether([charts.to_drawing(chart, font)]))
        del key

    columns = [c for c in GROUP_COLUMNS if c.attribute in PDF_GROUP_COLUMNS]
    for dimension, rows in figures.groups.items():
        story.append(para(str(DIMENSION_TITLES[dimension]), h2))
        header = [str(DIMENSION_LABELS[dimension])] + [str(c.label) for c in columns]
        data = [
            [para(group_label(dimension, m), small)] + [display(cell(m, c), c.kind) for c in columns]
            for m in rows[:MAX_ROWS]
        ]
        if not data:
            story.append(para(_("No data."), small))
            continue
        story.append(table([header, *data], [140] + [62] * len(columns)))
        if len(rows) > MAX_ROWS:
            story.append(para(_("%(count)s more rows in the Excel workbook.", count=len(rows) - MAX_ROWS), small))
    if progress:
        progress(75, _("Writing goals and alerts"))

    story.append(para(_("Target vs actual"), h2))
    if figures.goals:
        goal_rows = [[_("Campaign"), _("Goal"), _("Target"), _("Actual"), _("Gap"), _("Met")]]
        for goal in figures.goals:
            kind = goal_kind(goal.metric)
            gap = goal.gap
            goal_rows.append(
                [
                    para(goal.campaign, small),
                    f"{GOAL_LABELS.get(goal.metric, goal.metric)} ({_('%(days)s days', days=goal.days)})",
                    display(goal.target, kind),
                    display(goal.actual, kind),
                    ("+" if gap is not None and gap >= 0 else "") + display(gap, kind),
                    _("yes") if goal.met else _("no"),
                ]
            )
        story.append(table(goal_rows, [130, 110, 55, 55, 55, 35], numeric_from=2))
    else:
        story.append(para(_("No goal was set for these campaigns."), small))

    story.append(para(_("Alerts that fired"), h2))
    if figures.alerts:
        alert_rows = [[_("When"), _("Campaign"), _("Reason")]]
        for alert in figures.alerts:
            alert_rows.append(
                [format_datetime(alert.at, "yyyy-MM-dd HH:mm"), para(alert.campaign, small), para(alert.reason, small)]
            )
        story.append(table(alert_rows, [90, 150, 200], numeric_from=3))
    else:
        story.append(para(_("No alert fired."), small))

    story.append(PageBreak())
    story.append(para(_("Appendix: definitions"), h2))
    for term, meaning in DEFINITIONS:
        story.append(Paragraph(f"<b>{escape(str(term))}</b>: {escape(str(meaning))}", body))

    document = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=40,
        rightMargin=40,
        topMargin=50,
        bottomMargin=55,
        title=title,
        author=generated_by,
        creator=_("Marketing Portal"),
    )
    if progress:
        progress(85, _("Laying out the pages"))
    footer = _("Generated by %(name)s on %(when)s", name=generated_by, when=when)
    document.build(story, canvasmaker=_numbered_canvas(title, footer, font))
