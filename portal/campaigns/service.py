"""Campaign rules: building the flow, and the validation every campaign must pass before it
can be scheduled (all problems listed at once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from portal import audit
from portal.access import Permission
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep, StepKind
from portal.extensions import db

BRANCH_CONDITIONS = ("opened", "clicked", "clicked_link", "form_submitted", "score_gte")
ACTION_TYPES = ("add_tag", "remove_tag", "notify_owner", "change_score")
EXIT_REASONS = ("unsubscribed", "converted", "entered_segment")
GOAL_METRICS = ("conversion_rate", "click_rate", "open_rate", "mql_count", "revenue")
EDITABLE_STATUSES = (CampaignStatus.DRAFT, CampaignStatus.PAUSED)


class CampaignError(ValueError):
    """A refused campaign change; the message says why."""


@dataclass(frozen=True)
class Problem:
    step_id: int | None
    message: str


def _editable(actor: Any, campaign: Campaign) -> None:
    if not actor.can(Permission.CAMPAIGN_EDIT):
        raise CampaignError("You may not edit campaigns.")
    if campaign.status not in EDITABLE_STATUSES:
        raise CampaignError("Pause the campaign before changing it.")


def create_campaign(actor: Any, values: dict[str, Any]) -> Campaign:
    if not actor.can(Permission.CAMPAIGN_EDIT):
        raise CampaignError("You may not create campaigns.")
    name = str(values.get("name", "")).strip()
    if not name:
        raise CampaignError("Name the campaign.")
    campaign = Campaign(name=name[:200], owner_id=actor.id)
    _apply_settings(campaign, values)
    db.session.add(campaign)
    db.session.flush()
    audit.record(actor, "campaign.created", f"campaign:{campaign.id}", {"name": campaign.name})
    db.session.commit()
    return campaign


def update_settings(actor: Any, campaign_id: int, values: dict[str, Any]) -> Campaign:
    campaign = get(campaign_id)
    _editable(actor, campaign)
    _apply_settings(campaign, values)
    audit.record(actor, "campaign.updated", f"campaign:{campaign.id}", {k: str(v) for k, v in values.items()})
    db.session.commit()
    return campaign


def _apply_settings(campaign: Campaign, values: dict[str, Any]) -> None:
    if "name" in values and str(values["name"]).strip():
        campaign.name = str(values["name"]).strip()[:200]
    if values.get("goal_metric"):
        if values["goal_metric"] not in GOAL_METRICS:
            raise CampaignError("Unknown goal metric.")
        campaign.goal_metric = values["goal_metric"]
    for key, kind in (("goal_target", float), ("goal_days", int), ("throttle_per_minute", int)):
        if values.get(key) not in (None, ""):
            try:
                setattr(campaign, key, kind(values[key]))
            except (TypeError, ValueError) as exc:
                raise CampaignError(f"{key} must be a number") from exc
    if campaign.throttle_per_minute is not None and campaign.throttle_per_minute < 1:
        raise CampaignError("The throttle must allow at least one message a minute.")
    if "segment_id" in values:
        campaign.segment_id = int(values["segment_id"]) if values["segment_id"] else None
    for key in ("window_start", "window_end"):
        if values.get(key):
            text = str(values[key])
            hours, _, minutes = text.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
                raise CampaignError("Send-window times are HH:MM.")
            setattr(campaign, key, f"{int(hours):02d}:{int(minutes):02d}")
    if values.get("entry_kind"):
        if values["entry_kind"] not in ("start", "segment_enter", "event"):
            raise CampaignError("Unknown entry.")
        campaign.entry_kind = values["entry_kind"]
        campaign.entry_event = str(values.get("entry_event", "")) if campaign.entry_kind == "event" else ""


def get(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError("No such campaign.")
    return campaign


def add_step(
    actor: Any,
    campaign_id: int,
    kind: str,
    config: dict[str, Any] | None = None,
    *,
    parent_id: int | None = None,
    branch: str | None = None,
    channel: str = "",
    content_version_id: int | None = None,
) -> CampaignStep:
    """Append a step to the main path, or to a branch's yes/no path."""
    campaign = get(campaign_id)
    _editable(actor, campaign)
    if kind not in set(StepKind):
        raise CampaignError("Unknown step kind.")
    if parent_id is not None:
        parent = db.session.get(CampaignStep, parent_id)
        if parent is None or parent.campaign_id != campaign.id or parent.kind != StepKind.BRANCH:
            raise CampaignError("Steps can only hang under a branch of this campaign.")
        if branch not in ("yes", "no"):
            raise CampaignError("Choose the yes or the no path.")
    else:
        branch = None
    position = db.session.scalar(
        select(func.coalesce(func.max(CampaignStep.position), -1) + 1).where(
            CampaignStep.campaign_id == campaign.id,
            CampaignStep.parent_id.is_(None) if parent_id is None else CampaignStep.parent_id == parent_id,
            CampaignStep.branch.is_(None) if branch is None else CampaignStep.branch == branch,
        )
    )
    step = CampaignStep(
        campaign_id=campaign.id,
        parent_id=parent_id,
        branch=branch,
        position=position,
        kind=kind,
        channel=channel,
        content_version_id=content_version_id,
        config=config or {},
    )
    db.session.add(step)
    db.session.flush()
    audit.record(actor, "campaign.step_added", f"campaign:{campaign.id}", {"step": step.id, "kind": kind})
    db.session.commit()
    return step


def remove_step(actor: Any, step_id: int) -> None:
    step = db.session.get(CampaignStep, step_id)
    if step is None:
        raise CampaignError("No such step.")
    _editable(actor, get(step.campaign_id))
    audit.record(actor, "campaign.step_removed", f"campaign:{step.campaign_id}", {"step": step.id, "kind": step.kind})
    for child in db.session.scalars(select(CampaignStep).where(CampaignStep.parent_id == step.id)):
        db.session.delete(child)
    db.session.delete(step)
    db.session.commit()


def path(campaign: Campaign, parent_id: int | None = None, branch: str | None = None) -> list[CampaignStep]:
    return [s for s in campaign.steps if s.parent_id == parent_id and s.branch == branch]


AB_METRICS = ("opens", "clicks")


def _ab_problems(step: CampaignStep) -> list[Problem]:
    """An A/B test: a second approved version of the same channel, a test share, a window, a metric."""
    from portal.content.models import AssetVersion, VersionStatus

    ab = (step.config or {}).get("ab")
    if not ab:
        return []
    problems = []
    other = db.session.get(AssetVersion, ab.get("version_b")) if ab.get("version_b") else None
    if other is None or other.status != VersionStatus.APPROVED:
        problems.append(Problem(step.id, "Variant B must be approved content."))
    elif step.channel and other.asset.kind != step.channel:
        problems.append(Problem(step.id, "Variant B does not fit the step's channel."))
    elif other.id == step.content_version_id:
        problems.append(Problem(step.id, "Variant B must differ from variant A."))
    if not isinstance(ab.get("share"), int) or not 1 <= ab["share"] <= 50:
        problems.append(Problem(step.id, "The A/B test share is 1-50 % of the audience."))
    if not isinstance(ab.get("window_hours"), int) or ab["window_hours"] < 1:
        problems.append(Problem(step.id, "The A/B test window is at least one hour."))
    if ab.get("metric") not in AB_METRICS:
        problems.append(Problem(step.id, "Choose how the winner is picked: opens or clicks."))
    return problems


def versions_to_test(step: CampaignStep) -> list[int]:
    """The content versions a message step can send: A, and B when it is an A/B test."""
    versions = [step.content_version_id] if step.content_version_id else []
    ab = (step.config or {}).get("ab") or {}
    if ab.get("version_b"):
        versions.append(ab["version_b"])
    return versions


def newer_approved_version(step: CampaignStep) -> int | None:
    """A newer approved version of the step's content, which the owner may choose to switch to."""
    from portal.content.models import AssetVersion, VersionStatus

    current = db.session.get(AssetVersion, step.content_version_id) if step.content_version_id else None
    if current is None:
        return None
    return db.session.scalar(
        select(AssetVersion.id).where(
            AssetVersion.asset_id == current.asset_id,
            AssetVersion.status == VersionStatus.APPROVED,
            AssetVersion.number > current.number,
        )
    )


def switch_to_newer_version(actor: Any, step_id: int) -> CampaignStep:
    """Approving a newer version never changes a campaign by itself: the owner switches here
    (the step then needs a new test send before it can be published)."""
    step = db.session.get(CampaignStep, step_id)
    if step is None:
        raise CampaignError("No such step.")
    _editable(actor, get(step.campaign_id))
    newer = newer_approved_version(step)
    if newer is None:
        raise CampaignError("There is no newer approved version.")
    before = step.content_version_id
    step.content_version_id = newer
    audit.record(
        actor,
        "campaign.step_version_switched",
        f"campaign:{step.campaign_id}",
        {"step": step.id, "from": before, "to": newer},
    )
    db.session.commit()
    return step


def in_flow_order(campaign: Campaign) -> list[CampaignStep]:
    """Steps as the flow reads: the main path, each branch followed by its yes then no path."""
    ordered: list[CampaignStep] = []

    def walk(parent_id: int | None, branch: str | None) -> None:
        for step in path(campaign, parent_id, branch):
            ordered.append(step)
            if step.kind == StepKind.BRANCH:
                walk(step.id, "yes")
                walk(step.id, "no")

    walk(None, None)
    return ordered


def validate(campaign_id: int) -> list[Problem]:
    """Everything that stops this campaign from being scheduled, all at once."""
    from portal.audience.segments import SegmentRuleError, count_segment
    from portal.content.models import AssetVersion, VersionStatus

    campaign = get(campaign_id)
    problems: list[Problem] = []
    if campaign.segment_id is None:
        problems.append(Problem(None, "Choose the audience (a segment)."))
    else:
        try:
            if count_segment(campaign.segment_id) == 0:
                problems.append(Problem(None, "The audience is empty."))
        except SegmentRuleError as exc:
            problems.append(Problem(None, f"The audience's rules are invalid: {exc}"))
    if campaign.entry_kind == "event" and not campaign.entry_event:
        problems.append(Problem(None, "Choose the event that starts the campaign."))
    if not any(s.kind == StepKind.MESSAGE for s in campaign.steps):
        problems.append(Problem(None, "Add at least one message step."))
    for step in campaign.steps:
        config = step.config or {}
        if step.kind == StepKind.MESSAGE:
            version = db.session.get(AssetVersion, step.content_version_id) if step.content_version_id else None
            if version is None:
                problems.append(Problem(step.id, "This message step has no content."))
            elif version.status != VersionStatus.APPROVED:
                problems.append(Problem(step.id, "This message step uses content that is not approved."))
            elif step.channel and version.asset.kind != step.channel:
                problems.append(Problem(step.id, "The content does not fit the step's channel."))
            problems += _ab_problems(step)
        elif step.kind == StepKind.DELAY:
            days, hours = config.get("days", 0), config.get("hours", 0)
            if not isinstance(days, int) or not isinstance(hours, int) or days < 0 or hours < 0:
                problems.append(Problem(step.id, "A delay cannot be negative."))
            elif days == 0 and hours == 0:
                problems.append(Problem(step.id, "A delay of nothing: remove it or give it a length."))
        elif step.kind == StepKind.BRANCH:
            if config.get("condition") not in BRANCH_CONDITIONS:
                problems.append(Problem(step.id, "Choose what the branch checks."))
            if not path(campaign, step.id, "yes") and not path(campaign, step.id, "no"):
                problems.append(Problem(step.id, "A branch needs at least one path."))
        elif step.kind == StepKind.ACTION:
            if config.get("type") not in ACTION_TYPES:
                problems.append(Problem(step.id, "Choose what the action does."))
            elif config.get("type") in ("add_tag", "remove_tag") and not config.get("value"):
                problems.append(Problem(step.id, "Name the tag."))
    return problems
