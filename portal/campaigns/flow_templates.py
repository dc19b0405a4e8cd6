"""Flows to start a campaign from: the operating guide's sequences, as data. Message steps
come without content (the person picks approved content on the canvas; validation says which
steps still need it)."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l

from portal.campaigns.models import Campaign, CampaignStep
from portal.extensions import db

# name -> (label, description, steps). A step: (kind, config, yes-path steps, no-path steps).
Step = tuple[str, dict[str, Any], tuple, tuple]

TEMPLATES: dict[str, tuple[Any, Any, tuple[Step, ...]]] = {
    "nurture": (
        _l("Lead nurturing (day 1, 3, 7)"),
        _l("An email on day 1; on day 3 a second email to those who opened it; an email to all on day 7."),
        (
            ("message", {}, (), ()),
            ("delay", {"days": 2, "hours": 0, "relative_to": "previous"}, (), ()),
            ("branch", {"condition": "opened", "value": "", "window_days": 0}, (("message", {}, (), ()),), ()),
            ("delay", {"days": 4, "hours": 0, "relative_to": "previous"}, (), ()),
            ("message", {}, (), ()),
        ),
    ),
    "webinar": (
        _l("Webinar invitation with reminders"),
        _l("The invitation; a reminder a week later to those who did not register; a last reminder the day before."),
        (
            ("message", {}, (), ()),
            (
                "branch",
                {"condition": "form_submitted", "value": "", "window_days": 7},
                (("action", {"type": "add_tag", "value": "webinar-registered"}, (), ()),),
                (("message", {}, (), ()),),
            ),
            ("delay", {"days": 6, "hours": 0, "relative_to": "entry"}, (), ()),
            ("message", {}, (), ()),
        ),
    ),
    "reengagement": (
        _l("Re-engagement of dormant contacts"),
        _l("A we-miss-you email; those who click get a tag, the others a last email after a week and leave."),
        (
            ("message", {}, (), ()),
            (
                "branch",
                {"condition": "clicked", "value": "", "window_days": 7},
                (("action", {"type": "add_tag", "value": "re-engaged"}, (), ()),),
                (("message", {}, (), ()), ("exit", {"reason": "converted", "value": ""}, (), ())),
            ),
        ),
    ),
}


def build_template(campaign: Campaign, name: str) -> None:
    """Add the template's steps to a new campaign (in the caller's transaction)."""
    from portal.campaigns.service import CampaignError

    if name not in TEMPLATES:
        raise CampaignError("unknown_template")

    def add(steps: tuple[Step, ...], parent: CampaignStep | None, branch: str | None) -> None:
        for position, (kind, config, yes, no) in enumerate(steps):
            step = CampaignStep(
                campaign_id=campaign.id,
                parent_id=parent.id if parent else None,
                branch=branch,
                position=position,
                kind=kind,
                channel="email" if kind == "message" else "",
                config=dict(config),
            )
            db.session.add(step)
            db.session.flush()
            add(yes, step, "yes")
            add(no, step, "no")

    add(TEMPLATES[name][2], None, None)
