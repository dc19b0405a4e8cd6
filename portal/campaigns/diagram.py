"""The campaign flow as a server-rendered SVG: boxes down the main path, a branch splitting
into its yes and no paths side by side. No script, text labels, readable without colour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from portal.campaigns.models import Campaign, CampaignStep
from portal.campaigns.service import path

BOX_W, BOX_H, GAP_Y, GAP_X = 200, 44, 28, 24
COLOURS = {"message": "#e8eefc", "delay": "#f0f2f6", "branch": "#fff4e0", "action": "#e7f5ee", "exit": "#fdecea"}


@dataclass
class Box:
    x: int
    y: int
    label: str
    kind: str
    step_id: int | None


def _layout(
    campaign: Campaign,
    steps: list[CampaignStep],
    x: int,
    y: int,
    label: Callable[[CampaignStep], str],
    boxes: list[Box],
    lines: list[tuple[int, int, int, int, str]],
    yes_no: tuple[str, str] = ("yes", "no"),
    entries: list[tuple[int, int]] | None = None,
) -> tuple[int, int, list[tuple[int, int]]]:
    """Lay out a path from (x, y), joined to the `entries` points above it; returns (width
    used, y after the path, the points where the path ends). A branch's two paths end where
    the path goes on (they rejoin it, as the runner moves journeys); an exit ends nowhere."""
    width = BOX_W
    previous = list(entries or [])
    for step in steps:
        for px, py in previous:
            lines.append((px, py, x + BOX_W // 2, y, ""))
        boxes.append(Box(x, y, label(step), step.kind, step.id))
        bottom = y + BOX_H
        y = bottom + GAP_Y
        previous = [] if step.kind == "exit" else [(x + BOX_W // 2, bottom)]
        if step.kind == "branch":
            yes_steps, no_steps = path(campaign, step.id, "yes"), path(campaign, step.id, "no")
            origin = (x + BOX_W // 2, bottom)
            yes_w, yes_end, yes_ends = _layout(campaign, yes_steps, x, y + 10, label, boxes, lines, yes_no)
            no_x = x + (yes_w if yes_steps else 0) + (GAP_X if yes_steps else 0)
            if no_steps and not yes_steps:
                no_x = x + BOX_W + GAP_X
            no_w, no_end, no_ends = _layout(campaign, no_steps, no_x, y + 10, label, boxes, lines, yes_no)
            if yes_steps:
                lines.append((*origin, x + BOX_W // 2, y + 10, yes_no[0]))
            if no_steps:
                lines.append((*origin, no_x + BOX_W // 2, y + 10, yes_no[1]))
            width = max(width, (no_x - x) + (no_w if no_steps else 0))
            y = max(yes_end, no_end) + (GAP_Y if yes_steps or no_steps else 0)
            # An empty path goes on straight from the branch itself.
            previous = (yes_ends if yes_steps else [origin]) + (no_ends if no_steps else [origin])
            previous = list(dict.fromkeys(previous))
    return width, y - GAP_Y if steps else y, previous


def flow_svg(
    campaign: Campaign, label: Callable[[CampaignStep], str], title: str, yes_no: tuple[str, str] = ("yes", "no")
) -> str:
    boxes: list[Box] = []
    lines: list[tuple[int, int, int, int, str]] = []
    width, height, _ends = _layout(campaign, path(campaign), 20, 20, label, boxes, lines, yes_no)
    svg_w, svg_h = width + 40, max(height + 20, 80)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="flow" width="{svg_w}" height="{svg_h}" '
        f'viewBox="0 0 {svg_w} {svg_h}" role="img" aria-labelledby="flow-title">',
        f'<title id="flow-title">{escape(title)}</title>',
    ]
    for x1, y1, x2, y2, text in lines:
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#8a93a6" stroke-width="1.5"/>')
        if text:
            parts.append(
                f'<text x="{(x1 + x2) // 2 + 4}" y="{(y1 + y2) // 2}" font-size="11" fill="#5b6476">'
                f"{escape(text)}</text>"
            )
    for box in boxes:
        parts.append(
            f'<g class="step step-{box.kind}" data-step="{box.step_id}"><rect x="{box.x}" y="{box.y}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="6" fill="{COLOURS.get(box.kind, "#fff")}" stroke="#b6bdc9"/>'
            f'<text x="{box.x + 10}" y="{box.y + 27}" font-size="13" fill="#1d2330">{escape(box.label[:26])}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
