"""The campaign canvas: the flow laid out as the page draws it (paths, branches with both
their paths and where they rejoin, day markers, step numbers), and the live figures on each
step, read from the journeys and the ledger with one grouped query each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from portal.audience.models import Contact
from portal.campaigns.models import Campaign, CampaignStep, Journey, JourneyStatus, StepKind
from portal.campaigns.service import in_flow_order, path
from portal.delivery.models import Delivery, DeliveryStatus
from portal.extensions import db

# The figures a message step shows, and which of them list their contacts when clicked.
LEDGER_FIGURES = ("reached", "sent", "delivered", "opened", "clicked")
FIGURES = ("waiting", *LEDGER_FIGURES)


@dataclass
class Lane:
    """One path of the flow: the main path, or a branch's yes or no path."""

    parent_id: int | None
    branch: str | None
    nodes: list[Node] = field(default_factory=list)
    # When the path's first contacts reach its end (where it rejoins), hours after entry.
    end_hours: int = 0


@dataclass
class Node:
    step: CampaignStep
    number: int  # the step's number in reading order, from 1
    day: int  # the day of the flow its first contacts reach it (day 1: entry)
    show_day: bool  # a day marker goes above it (the day changed)
    index: int  # its place on its path, from 0
    last: bool
    yes: Lane | None = None
    no: Lane | None = None


def _hours(config: dict[str, Any]) -> int:
    try:
        return max(0, int(config.get("days") or 0)) * 24 + max(0, int(config.get("hours") or 0))
    except (TypeError, ValueError):
        return 0


def layout(campaign: Campaign) -> Lane:
    """The flow as lanes of nodes. Day markers come from the delays: a delay relative to the
    previous step adds its length, one relative to entry waits until that long after entry;
    a branch's no path starts when the branch's window ends; after the rejoin the day is when
    the first contacts (of either path) arrive."""
    numbers = {step.id: n for n, step in enumerate(in_flow_order(campaign), start=1)}

    def lane(parent_id: int | None, branch: str | None, elapsed: int, shown_day: int | None) -> Lane:
        result = Lane(parent_id, branch)
        steps = path(campaign, parent_id, branch)
        for index, step in enumerate(steps):
            day = elapsed // 24 + 1
            node = Node(step, numbers[step.id], day, day != shown_day, index, index == len(steps) - 1)
            shown_day = day
            config = step.config or {}
            if step.kind == StepKind.DELAY:
                length = _hours(config)
                elapsed = max(elapsed, length) if config.get("relative_to") == "entry" else elapsed + length
            elif step.kind == StepKind.BRANCH:
                try:
                    window = max(0, int(config.get("window_days") or 0)) * 24
                except (TypeError, ValueError):
                    window = 0
                node.yes = lane(step.id, "yes", elapsed, day)
                node.no = lane(step.id, "no", elapsed + window, day)
                elapsed = min(node.yes.end_hours, node.no.end_hours)
            result.nodes.append(node)
        result.end_hours = elapsed
        return result

    return lane(None, None, 0, None)


def step_numbers(campaign: Campaign) -> dict[int, int]:
    return {step.id: n for n, step in enumerate(in_flow_order(campaign), start=1)}


def step_figures(campaign_id: int) -> dict[int, dict[str, int]]:
    """Per step: contacts waiting there now, and for message steps the ledger's figures
    (reached: every contact the step was planned for, including those left out; sent;
    delivered; opened; clicked)."""
    figures: dict[int, dict[str, int]] = {}
    waiting = db.session.execute(
        select(Journey.step_id, func.count(Journey.id))
        .where(Journey.campaign_id == campaign_id, Journey.status == JourneyStatus.ACTIVE, Journey.step_id.isnot(None))
        .group_by(Journey.step_id)
    )
    for step_id, count in waiting:
        figures.setdefault(step_id, {})["waiting"] = count
    settled = (DeliveryStatus.SENT, DeliveryStatus.BOUNCED)
    ledger = db.session.execute(
        select(
            Delivery.step_id,
            func.count(Delivery.id),
            func.count(Delivery.id).filter(Delivery.status.in_(settled)),
            func.count(Delivery.id).filter(Delivery.status == DeliveryStatus.SENT),
            func.count(Delivery.opened_at),
            func.count(Delivery.clicked_at),
        )
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.step_id)
    )
    for step_id, *counts in ledger:
        figures.setdefault(step_id, {}).update(zip(LEDGER_FIGURES, counts, strict=True))
    return figures


def contacts_behind(campaign_id: int, step_id: int, figure: str, limit: int = 100) -> list[Contact]:
    """The contacts behind one figure of one step (the first `limit`, by id)."""
    if figure == "waiting":
        ids = select(Journey.contact_id).where(
            Journey.campaign_id == campaign_id, Journey.status == JourneyStatus.ACTIVE, Journey.step_id == step_id
        )
    else:
        conditions = {
            "reached": [],
            "sent": [Delivery.status.in_((DeliveryStatus.SENT, DeliveryStatus.BOUNCED))],
            "delivered": [Delivery.status == DeliveryStatus.SENT],
            "opened": [Delivery.opened_at.isnot(None)],
            "clicked": [Delivery.clicked_at.isnot(None)],
        }[figure]
        ids = select(Delivery.contact_id).where(
            Delivery.campaign_id == campaign_id, Delivery.step_id == step_id, *conditions
        )
    return list(db.session.scalars(select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id).limit(limit)))


def step_values(step: CampaignStep) -> dict[str, Any]:
    """A step's fields as the side panel's form shows them."""
    config = step.config or {}
    if step.kind == StepKind.MESSAGE:
        ab = config.get("ab") or {}
        return {
            "content_version_id": step.content_version_id or "",
            "version_b": ab.get("version_b", ""),
            "ab_share": ab.get("share", 20),
            "ab_window_hours": ab.get("window_hours", 24),
            "ab_metric": ab.get("metric", "clicks"),
        }
    if step.kind == StepKind.ACTION:
        return {"action_type": config.get("type", ""), "value": config.get("value", "")}
    return dict(config)
