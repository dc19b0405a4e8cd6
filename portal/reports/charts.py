"""Charts as a neutral list of shapes, drawn as SVG for the page and as a reportlab Drawing for
the PDF: both outputs come from the same `Chart`, so they can never disagree.

Coordinates have their origin at the top left, as in SVG; the reportlab side flips them."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

PALETTE = {"sent": "#3b6fd8", "opens": "#2f9e6e", "clicks": "#e08a1e", "converted": "#b5446e", "axis": "#8a93a6"}
TEXT = "#1d2330"
MUTED = "#5b6476"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str


@dataclass(frozen=True)
class Line:
    points: tuple[tuple[float, float], ...]
    stroke: str
    width: float = 1.0


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline
    text: str
    size: float = 10
    fill: str = TEXT
    anchor: str = "start"  # start | middle | end


@dataclass
class Chart:
    title: str
    width: float
    height: float
    shapes: list[Rect | Line | Text] = field(default_factory=list)
    # A text alternative (screen readers, and the PDF's table of figures).
    description: str = ""


def _nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def line_chart(
    title: str, buckets: list[str], series: list[tuple[str, str, list[int]]], width: float = 640, height: float = 260
) -> Chart:
    """One line per (key, label, values) over the buckets, with axes, ticks and a legend."""
    chart = Chart(title, width, height)
    left, right, top, bottom = 52, 16, 34, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((max(values) for _key, _label, values in series if values), default=0))
    shapes = chart.shapes
    for tick in range(5):
        value = peak * tick / 4
        y = top + plot_h - plot_h * tick / 4
        shapes.append(Line(((left, y), (left + plot_w, y)), "#e3e6ec"))
        shapes.append(Text(left - 6, y + 4, f"{value:,.0f}", 9, MUTED, "end"))
    shapes.append(Line(((left, top), (left, top + plot_h), (left + plot_w, top + plot_h)), PALETTE["axis"]))
    count = len(buckets)

    def x_at(index: int) -> float:
        return left + (plot_w / 2 if count == 1 else plot_w * index / (count - 1))

    every = max(1, count // 8)
    for index, bucket in enumerate(buckets):
        if index % every == 0 or index == count - 1:
            shapes.append(Text(x_at(index), top + plot_h + 16, bucket[5:], 9, MUTED, "middle"))
    legend_x = left
    for key, label, values in series:
        colour = PALETTE.get(key, "#555")
        points = tuple((x_at(i), top + plot_h - plot_h * v / peak) for i, v in enumerate(values))
        if len(points) == 1:
            x, y = points[0]
            shapes.append(Rect(x - 3, y - 3, 6, 6, colour))
        elif points:
            shapes.append(Line(points, colour, 2))
        shapes.append(Rect(legend_x, height - 14, 10, 10, colour))
        shapes.append(Text(legend_x + 14, height - 5, f"{label} {sum(values):,}", 10, TEXT))
        legend_x += 150
    shapes.append(Text(left, 18, title, 13, TEXT))
    chart.description = "; ".join(f"{label}: {sum(values):,}" for _k, label, values in series)
    return chart


def funnel_chart(title: str, stages: list[tuple[str, str, int]], width: float = 640, height: float = 220) -> Chart:
    """Horizontal bars for (key, label, count) stages, each with its count and share of the first."""
    chart = Chart(title, width, height)
    left, top, bar_h, gap = 110, 34, 30, 12
    plot_w = width - left - 150
    first = stages[0][2] if stages else 0
    for index, (_key, label, value) in enumerate(stages):
        y = top + index * (bar_h + gap)
        bar = plot_w * value / first if first else 0
        chart.shapes.append(Rect(left, y, plot_w, bar_h, "#eef1f6"))
        if bar:
            chart.shapes.append(Rect(left, y, bar, bar_h, list(PALETTE.values())[index % 4]))
        chart.shapes.append(Text(left - 8, y + bar_h / 2 + 4, label, 11, TEXT, "end"))
        share = f" ({value / first * 100:.1f}%)" if first else ""
        chart.shapes.append(Text(left + plot_w + 8, y + bar_h / 2 + 4, f"{value:,}{share}", 11, TEXT))
    chart.shapes.append(Text(left, 18, title, 13, TEXT))
    chart.description = "; ".join(f"{label}: {value:,}" for _k, label, value in stages)
    return chart


# --- SVG ---------------------------------------------------------------------------------


def to_svg(chart: Chart, element_id: str) -> str:
    """Inline SVG; every text is escaped, nothing is fetched."""
    w, h = chart.width, chart.height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id={quoteattr(element_id)} class="chart" viewBox="0 0 {w:g} {h:g}" '
        f'width="100%" role="img" aria-labelledby="{element_id}-title {element_id}-desc" '
        'font-family="system-ui, sans-serif">',
        f'<title id="{element_id}-title">{escape(chart.title)}</title>',
        f'<desc id="{element_id}-desc">{escape(chart.description)}</desc>',
    ]
    for shape in chart.shapes:
        if isinstance(shape, Rect):
            parts.append(
                f'<rect x="{shape.x:.1f}" y="{shape.y:.1f}" width="{shape.width:.1f}" height="{shape.height:.1f}" '
                f'fill="{shape.fill}"/>'
            )
        elif isinstance(shape, Line):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in shape.points)
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{shape.stroke}" stroke-width="{shape.width:g}"/>'
            )
        else:
            parts.append(
                f'<text x="{shape.x:.1f}" y="{shape.y:.1f}" font-size="{shape.size:g}" fill="{shape.fill}" '
                f'text-anchor="{shape.anchor}">{escape(shape.text)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


# --- reportlab ---------------------------------------------------------------------------


def to_drawing(chart: Chart, font_name: str, scale: float = 0.75):
    """A reportlab Drawing of the same shapes (`scale` fits the page width: 640 px -> 480 pt)."""
    from reportlab.graphics.shapes import Drawing, Group, PolyLine, String
    from reportlab.graphics.shapes import Rect as RLRect
    from reportlab.lib.colors import HexColor

    h = chart.height
    group = Group()
    for shape in chart.shapes:
        if isinstance(shape, Rect):
            group.add(
                RLRect(
                    shape.x,
                    h - shape.y - shape.height,
                    shape.width,
                    shape.height,
                    fillColor=HexColor(shape.fill),
                    strokeColor=None,
                )
            )
        elif isinstance(shape, Line):
            flat = [c for x, y in shape.points for c in (x, h - y)]
            group.add(PolyLine(flat, strokeColor=HexColor(shape.stroke), strokeWidth=shape.width))
        else:
            group.add(
                String(
                    shape.x,
                    h - shape.y,
                    shape.text,
                    fontName=font_name,
                    fontSize=shape.size,
                    fillColor=HexColor(shape.fill),
                    textAnchor=shape.anchor,
                )
            )
    group.scale(scale, scale)
    drawing = Drawing(chart.width * scale, chart.height * scale)
    drawing.add(group)
    return drawing


def report_charts(figures) -> dict[str, Chart]:
    """The charts of a report (`metrics.Figures`), titled in the current language."""
    from flask_babel import gettext as _

    from portal.reports.formatting import FUNNEL_LABELS

    per = _("per hour") if figures.filters.bucket == "hour" else _("per day")
    series = figures.series
    return {
        "series": line_chart(
            _("Sends, opens and clicks %(per)s", per=per),
            series.buckets,
            [
                ("sent", _("Delivered"), series.sent),
                ("opens", _("Opens"), series.opens),
                ("clicks", _("Clicks"), series.clicks),
            ],
        ),
        "funnel": funnel_chart(_("Funnel"), [(key, str(FUNNEL_LABELS[key]), value) for key, value in figures.funnel]),
    }
