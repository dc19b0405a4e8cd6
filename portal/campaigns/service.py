"""Campaign rules: building the flow, and the validation every campaign must pass before it
can be scheduled (all problems listed at once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update

from portal import audit
from portal.access import Permission
from portal.campaigns.models import Campaign, CampaignStatus, CampaignStep, Journey, JourneyStatus, StepKind
from portal.extensions import db
from portal.models_base import utcnow
from portal.refusals import Refusal

BRANCH_CONDITIONS = ("opened", "clicked", "clicked_link", "form_submitted", "score_gte")
ACTION_TYPES = ("add_tag", "remove_tag", "notify_owner", "change_score")
EXIT_REASONS = ("unsubscribed", "converted", "entered_segment")
GOAL_METRICS = ("conversion_rate", "click_rate", "open_rate", "mql_count", "revenue")
EDITABLE_STATUSES = (CampaignStatus.DRAFT, CampaignStatus.PAUSED)


AB_METRICS = ("opens", "clicks")
# Where contacts waiting at a removed step go: on to what follows it, or out of the campaign.
WAITING_CHOICES = ("next", "exit")
# The send window's days, ISO weekday numbers (Monday 1 .. Sunday 7).
WEEKDAYS = "1234567"


class CampaignError(Refusal, ValueError):
    """A refused campaign change: a code and its parameters; the page makes the sentence.
    (Older callers pass a finished sentence as the code, which reads as itself.)"""

    messages = {
        "may_not_edit": _l("You may not edit campaigns."),
        "not_editable": _l("The campaign is running: pause it before changing its flow or settings."),
        "no_such_campaign": _l("No such campaign."),
        "no_such_step": _l("No such step."),
        "unknown_kind": _l("Unknown step kind."),
        "not_under_branch": _l("Steps can only hang under a branch of this campaign."),
        "choose_path": _l("Choose the yes or the no path."),
        "into_itself": _l("A branch cannot move into one of its own paths."),
        "started_order_fixed": _l(
            "Contacts are already on their way through this flow, so its steps keep their order: "
            "change, add or remove steps instead."
        ),
        "contacts_past": _l(
            "%(count)s contacts already wait at or after this point of the paused flow and would never "
            "pass the new step: add it after the steps where contacts wait."
        ),
        "contacts_waiting": _l("%(count)s contacts wait at this step: choose where they go before removing it."),
        "step_has_history": _l(
            "This step has already planned or sent %(count)s messages; it stays so that the reports keep them."
        ),
        "content_not_approved": _l("Choose approved content for the message."),
        "not_a_whole_number": _l("“%(value)s” is not a whole number."),
        "negative_delay": _l("A delay cannot be negative."),
        "empty_delay": _l("A delay of nothing: give it days or hours."),
        "unknown_condition": _l("Choose what the branch checks."),
        "unknown_action": _l("Choose what the action does."),
        "unknown_exit": _l("Choose why contacts leave."),
        "unknown_metric": _l("Choose how the winner is picked: opens or clicks."),
        "unknown_goal": _l("Unknown goal metric."),
        "bad_window_time": _l("The send window's hours are from 00:00 to 23:00."),
        "no_weekday": _l("Choose at least one day of the week for sending."),
        "unknown_timezone": _l("Unknown time zone."),
        "unknown_owner": _l("The owner must be an active person who may edit campaigns."),
        "bad_start": _l("The planned start is not a date and time."),
        "name_required": _l("Name the campaign."),
        "unknown_template": _l("Unknown flow template."),
        "throttle_too_low": _l("The throttle must allow at least one message a minute."),
        "unknown_entry": _l("Choose who enters the campaign."),
        "no_newer_version": _l("There is no newer approved version."),
        "test_address_domain": _l("Test addresses must be at a company domain: %(domains)s."),
        "test_mobile_not_company": _l("Test mobile numbers must be company numbers."),
        "invalid_test_address": _l("“%(value)s” is neither a valid email address nor a valid mobile number."),
        "no_such_test_address": _l("No such test address."),
        "may_not_test_send": _l("You may not make test sends."),
        "no_test_address": _l("Add a test address first."),
        "choose_message_step": _l("Choose at least one message step."),
        "step_without_content": _l("Step %(number)s has no content."),
        "needs_test_email": _l("Step %(number)s: add a test email address first."),
        "needs_test_mobile": _l("Step %(number)s: add a test mobile number first."),
        "may_not_publish": _l("You may not publish campaigns."),
        "not_publishable": _l("Only a draft or paused campaign can be published."),
        "not_ready": _l("It cannot be published yet: %(problems)s"),
        "published_already": _l("The campaign was published already."),
        "unknown_status_action": _l("Unknown action."),
        "may_not_run": _l("You may not run campaigns."),
    }

    def sentence_params(self) -> dict[str, Any]:
        if self.code != "not_ready":
            return self.params
        # Each problem is a message id marked with N_ (see `validate`), translated as shown.
        sentences = [gettext(p) for p in self.params.get("problems", [])]
        sentences += [
            gettext("Step %(number)s needs a successful test send of its current content.", number=n)
            for n in self.params.get("untested", [])
        ]
        return {"problems": " ".join(sentences)}


@dataclass(frozen=True)
class Problem:
    """Something that stops the campaign from being scheduled; `message` is the English
    sentence, marked for the catalogue, which the page shows in the reader's language."""

    step_id: int | None
    message: str


def N_(text: str) -> str:  # gettext's name for "mark for translation, translate later"
    return text


def editable(campaign: Campaign) -> bool:
    """Whether the campaign's flow and settings may change now (a draft, or paused)."""
    return campaign.status in EDITABLE_STATUSES


def _editable(actor: Any, campaign: Campaign) -> None:
    if not actor.can(Permission.CAMPAIGN_EDIT):
        raise CampaignError("may_not_edit")
    if not editable(campaign):
        raise CampaignError("not_editable")


def create_campaign(actor: Any, values: dict[str, Any]) -> Campaign:
    """A draft campaign owned by its creator (unless another owner is chosen), optionally
    started from one of the flow templates."""
    if not actor.can(Permission.CAMPAIGN_EDIT):
        raise CampaignError("may_not_edit")
    name = str(values.get("name", "")).strip()
    if not name:
        raise CampaignError("name_required")
    campaign = Campaign(name=name[:200], owner_id=actor.id)
    _apply_settings(campaign, values)
    db.session.add(campaign)
    db.session.flush()
    template = str(values.get("template") or "")
    if template:
        from portal.campaigns.flow_templates import build_template

        build_template(campaign, template)
    audit.record(
        actor, "campaign.created", f"campaign:{campaign.id}", {"name": campaign.name, "template": template or None}
    )
    db.session.commit()
    return campaign


def update_settings(actor: Any, campaign_id: int, values: dict[str, Any]) -> Campaign:
    campaign = get(campaign_id)
    _editable(actor, campaign)
    _apply_settings(campaign, values)
    audit.record(
        actor,
        "campaign.updated",
        f"campaign:{campaign.id}",
        {k: str(v) for k, v in values.items() if k not in ("csrf_token", "weekday")},
    )
    db.session.commit()
    return campaign


def _apply_settings(campaign: Campaign, values: dict[str, Any]) -> None:
    if "name" in values and str(values["name"]).strip():
        campaign.name = str(values["name"]).strip()[:200]
    if values.get("goal_metric"):
        if values["goal_metric"] not in GOAL_METRICS:
            raise CampaignError("unknown_goal")
        campaign.goal_metric = values["goal_metric"]
    if values.get("goal_target") not in (None, ""):
        try:
            campaign.goal_target = float(values["goal_target"])
        except (TypeError, ValueError):
            raise CampaignError("not_a_whole_number", value=str(values["goal_target"])[:20]) from None
    for key in ("goal_days", "throttle_per_minute"):
        if values.get(key) not in (None, ""):
            setattr(campaign, key, _whole(values[key]))
    if campaign.throttle_per_minute is not None and campaign.throttle_per_minute < 1:
        raise CampaignError("throttle_too_low")
    if "segment_id" in values:
        campaign.segment_id = int(values["segment_id"]) if str(values["segment_id"]).isdigit() else None
    if values.get("owner_id"):
        campaign.owner_id = _owner(values["owner_id"])
    if values.get("timezone"):
        try:
            ZoneInfo(str(values["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise CampaignError("unknown_timezone") from None
        campaign.timezone = str(values["timezone"])
    for key in ("window_start", "window_end"):
        if values.get(key):
            text = str(values[key])
            hours, _, minutes = text.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
                raise CampaignError("bad_window_time")
            setattr(campaign, key, f"{int(hours):02d}:{int(minutes):02d}")
    if "weekdays" in values:
        days = values["weekdays"]
        chosen = "".join(d for d in WEEKDAYS if d in (days if isinstance(days, list | tuple | set) else str(days)))
        if not chosen:
            raise CampaignError("no_weekday")
        campaign.window_days = chosen
    if "planned_start" in values:
        campaign.scheduled_at = _planned_start(str(values["planned_start"] or ""), campaign.timezone)
    if values.get("entry_kind"):
        if values["entry_kind"] not in ("start", "segment_enter", "event"):
            raise CampaignError("unknown_entry")
        campaign.entry_kind = values["entry_kind"]
        campaign.entry_event = str(values.get("entry_event", "")) if campaign.entry_kind == "event" else ""


def _planned_start(raw: str, timezone: str) -> datetime | None:
    """The planned start, typed as a local time in the campaign's time zone ("" for none)."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=ZoneInfo(timezone))
    except ValueError:
        raise CampaignError("bad_start") from None


def _owner(raw: Any) -> int:
    from portal.auth.models import User

    owner = db.session.get(User, _whole(raw))
    if owner is None or not owner.is_active or not owner.can(Permission.CAMPAIGN_EDIT):
        raise CampaignError("unknown_owner")
    return owner.id


def _whole(raw: Any) -> int:
    if isinstance(raw, int):
        return raw
    text = str(raw or "").strip()
    try:
        return int(text or 0)
    except ValueError:
        raise CampaignError("not_a_whole_number", value=text[:20]) from None


def get(campaign_id: int) -> Campaign:
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError("no_such_campaign")
    return campaign


def _path_steps(campaign_id: int, parent_id: int | None, branch: str | None) -> list[CampaignStep]:
    return list(
        db.session.scalars(
            select(CampaignStep)
            .where(
                CampaignStep.campaign_id == campaign_id,
                CampaignStep.parent_id.is_(None) if parent_id is None else CampaignStep.parent_id == parent_id,
                CampaignStep.branch.is_(None) if branch is None else CampaignStep.branch == branch,
            )
            .order_by(CampaignStep.position, CampaignStep.id)
        )
    )


def _renumber(steps: list[CampaignStep]) -> None:
    for position, step in enumerate(steps):
        if step.position != position:
            step.position = position


def _descendants(step: CampaignStep) -> list[CampaignStep]:
    """The steps hanging under a branch, at any depth."""
    found: list[CampaignStep] = []
    children = list(db.session.scalars(select(CampaignStep).where(CampaignStep.parent_id == step.id)))
    for child in children:
        found.append(child)
        found += _descendants(child)
    return found


def _check_path(campaign: Campaign, parent_id: int | None, branch: str | None) -> str | None:
    if parent_id is None:
        return None
    parent = db.session.get(CampaignStep, parent_id)
    if parent is None or parent.campaign_id != campaign.id or parent.kind != StepKind.BRANCH:
        raise CampaignError("not_under_branch")
    if branch not in ("yes", "no"):
        raise CampaignError("choose_path")
    return branch


def waiting_at(campaign_id: int, step_ids: list[int]) -> int:
    """How many contacts wait at any of these steps now."""
    if not step_ids:
        return 0
    return (
        db.session.scalar(
            select(func.count(Journey.id)).where(
                Journey.campaign_id == campaign_id,
                Journey.status == JourneyStatus.ACTIVE,
                Journey.step_id.in_(step_ids),
            )
        )
        or 0
    )


def _steps_from(steps: list[CampaignStep]) -> list[int]:
    ids: list[int] = []
    for step in steps:
        ids.append(step.id)
        ids += [s.id for s in _descendants(step)]
    return ids


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
    index: int | None = None,
) -> CampaignStep:
    """Put a step on the main path, or on a branch's yes/no path: at `index` of that path
    (the later steps move down one), or at its end. In a paused campaign a step goes only
    where no contact has gone past yet, so that everyone still on the way passes it."""
    campaign = get(campaign_id)
    _editable(actor, campaign)
    if kind not in set(StepKind):
        raise CampaignError("unknown_kind")
    branch = _check_path(campaign, parent_id, branch)
    steps = _path_steps(campaign.id, parent_id, branch)
    index = len(steps) if index is None else max(0, min(int(index), len(steps)))
    if campaign.started_at is not None:
        past = waiting_at(campaign.id, _steps_from(steps[index:]))
        if past:
            raise CampaignError("contacts_past", count=past)
    step = CampaignStep(
        campaign_id=campaign.id,
        parent_id=parent_id,
        branch=branch,
        position=index,
        kind=kind,
        channel=channel,
        content_version_id=content_version_id,
        config=config or {},
    )
    db.session.add(step)
    steps.insert(index, step)
    _renumber(steps)
    db.session.flush()
    audit.record(
        actor,
        "campaign.step_added",
        f"campaign:{campaign.id}",
        {"step": step.id, "kind": kind, "branch": branch, "position": index + 1},
    )
    db.session.commit()
    return step


def insert_step(
    actor: Any,
    campaign_id: int,
    kind: str,
    values: dict[str, Any],
    *,
    parent_id: int | None = None,
    branch: str | None = None,
    index: int | None = None,
) -> CampaignStep:
    """Insert a step built from a form's plain values (only the fields of its kind count)."""
    if kind not in set(StepKind):
        raise CampaignError("unknown_kind")
    config, channel, version_id = step_settings(kind, values)
    return add_step(
        actor,
        campaign_id,
        kind,
        config,
        parent_id=parent_id,
        branch=branch,
        channel=channel,
        content_version_id=version_id,
        index=index,
    )


def step_settings(kind: str, values: dict[str, Any]) -> tuple[dict[str, Any], str, int | None]:
    """(config, channel, content version) of a step of `kind` from plain values, checked."""
    from portal.content.models import AssetVersion, VersionStatus

    if kind == StepKind.MESSAGE:
        version_id = _whole(values.get("content_version_id")) or None
        version = db.session.get(AssetVersion, version_id) if version_id else None
        if version is None or version.status != VersionStatus.APPROVED:
            raise CampaignError("content_not_approved")
        config: dict[str, Any] = {}
        version_b = _whole(values.get("version_b")) or None
        if version_b:
            metric = str(values.get("ab_metric") or "clicks")
            if metric not in AB_METRICS:
                raise CampaignError("unknown_metric")
            config["ab"] = {
                "version_b": version_b,
                "share": _whole(values.get("ab_share") or 20),
                "window_hours": _whole(values.get("ab_window_hours") or 24),
                "metric": metric,
            }
        return config, version.asset.kind, version.id
    if kind == StepKind.DELAY:
        days, hours = _whole(values.get("days")), _whole(values.get("hours"))
        if days < 0 or hours < 0:
            raise CampaignError("negative_delay")
        if days == 0 and hours == 0:
            raise CampaignError("empty_delay")
        relative = "entry" if values.get("relative_to") == "entry" else "previous"
        return {"days": days, "hours": hours, "relative_to": relative}, "", None
    if kind == StepKind.BRANCH:
        condition = str(values.get("condition") or "")
        if condition not in BRANCH_CONDITIONS:
            raise CampaignError("unknown_condition")
        window = _whole(values.get("window_days") if values.get("window_days") not in (None, "") else 3)
        if window < 0:
            raise CampaignError("negative_delay")
        return (
            {"condition": condition, "value": str(values.get("value") or "").strip(), "window_days": window},
            "",
            None,
        )
    if kind == StepKind.ACTION:
        action = str(values.get("action_type") or "")
        if action not in ACTION_TYPES:
            raise CampaignError("unknown_action")
        return {"type": action, "value": str(values.get("value") or "").strip()}, "", None
    reason = str(values.get("reason") or "converted")
    if reason not in EXIT_REASONS:
        raise CampaignError("unknown_exit")
    return {"reason": reason, "value": str(values.get("value") or "").strip()}, "", None


def update_step(actor: Any, step_id: int, values: dict[str, Any]) -> CampaignStep:
    """Change a step's own fields (its kind stays). A message step with other content needs a
    new test send before the campaign can be published or resumed."""
    step = _step(step_id)
    _editable(actor, get(step.campaign_id))
    config, channel, version_id = step_settings(step.kind, values)
    before = {"config": step.config, "content": step.content_version_id}
    step.config = config
    step.channel = channel
    step.content_version_id = version_id
    step.updated_at = utcnow()
    audit.record(
        actor,
        "campaign.step_changed",
        f"campaign:{step.campaign_id}",
        {"step": step.id, "kind": step.kind, "before": before, "after": {"config": config, "content": version_id}},
    )
    db.session.commit()
    return step


def _step(step_id: int) -> CampaignStep:
    step = db.session.get(CampaignStep, step_id)
    if step is None:
        raise CampaignError("no_such_step")
    return step


def move_step(actor: Any, step_id: int, *, parent_id: int | None, branch: str | None, index: int) -> CampaignStep:
    """Move a step (with its paths, for a branch) to `index` of a path of the same flow. Once
    contacts have entered the flow its order stays as it is."""
    step = _step(step_id)
    campaign = get(step.campaign_id)
    _editable(actor, campaign)
    if campaign.started_at is not None:
        raise CampaignError("started_order_fixed")
    branch = _check_path(campaign, parent_id, branch)
    if parent_id is not None and (parent_id == step.id or parent_id in {s.id for s in _descendants(step)}):
        raise CampaignError("into_itself")
    source = _path_steps(campaign.id, step.parent_id, step.branch)
    before = (step.parent_id, step.branch, source.index(step) + 1)
    source.remove(step)
    _renumber(source)
    same_path = (parent_id, branch) == (step.parent_id, step.branch)
    target = source if same_path else _path_steps(campaign.id, parent_id, branch)
    index = max(0, min(int(index), len(target)))
    target.insert(index, step)
    step.parent_id, step.branch = parent_id, branch
    _renumber(target)
    audit.record(
        actor,
        "campaign.step_moved",
        f"campaign:{campaign.id}",
        {"step": step.id, "from": before[2], "to": index + 1, "branch": branch},
    )
    db.session.commit()
    return step


def move_step_by(actor: Any, step_id: int, offset: int) -> CampaignStep:
    """Move a step up (-1) or down (+1) on its own path."""
    step = _step(step_id)
    steps = _path_steps(step.campaign_id, step.parent_id, step.branch)
    index = steps.index(step) + offset
    return move_step(actor, step_id, parent_id=step.parent_id, branch=step.branch, index=index)


def remove_step(actor: Any, step_id: int, waiting: str = "") -> None:
    """Remove a step (a branch with its paths). Contacts waiting there go on to what follows
    the step (`waiting="next"`) or leave the campaign (`"exit"`): the person chooses, the
    portal never decides for them. A step with messages in the ledger stays, so that the
    reports keep them."""
    from portal.campaigns.runner import Flow
    from portal.delivery.models import Delivery

    step = _step(step_id)
    campaign = get(step.campaign_id)
    _editable(actor, campaign)
    doomed = [step, *_descendants(step)]
    ids = [s.id for s in doomed]
    history = db.session.scalar(select(func.count(Delivery.id)).where(Delivery.step_id.in_(ids))) or 0
    if history:
        raise CampaignError("step_has_history", count=history)
    count = waiting_at(campaign.id, ids)
    if count and waiting not in WAITING_CHOICES:
        raise CampaignError("contacts_waiting", count=count)
    details: dict[str, Any] = {"step": step.id, "kind": step.kind}
    if count:
        now = utcnow()
        following = Flow(campaign).next.get(step.id)
        where = (Journey.campaign_id == campaign.id, Journey.status == JourneyStatus.ACTIVE, Journey.step_id.in_(ids))
        if waiting == "exit":
            values: dict[str, Any] = {
                "status": JourneyStatus.EXITED,
                "exit_reason": "step_removed",
                "step_id": None,
                "finished_at": now,
            }
        elif following is None:
            values = {"status": JourneyStatus.COMPLETED, "step_id": None, "finished_at": now}
        else:
            values = {"step_id": following, "arrived_at": now}
        db.session.execute(update(Journey).where(*where).values(**values).execution_options(synchronize_session=False))
        details.update(waiting=count, went=waiting, to_step=following if waiting == "next" else None)
    audit.record(actor, "campaign.step_removed", f"campaign:{campaign.id}", details)
    siblings = [s for s in _path_steps(campaign.id, step.parent_id, step.branch) if s.id != step.id]
    # Deepest first, one at a time: the database cascades a branch's paths on its own, and
    # the ORM must not find a row already gone.
    for gone in reversed(doomed):
        db.session.delete(gone)
        db.session.flush()
    _renumber(siblings)
    db.session.commit()


def path(campaign: Campaign, parent_id: int | None = None, branch: str | None = None) -> list[CampaignStep]:
    return [s for s in campaign.steps if s.parent_id == parent_id and s.branch == branch]


def _ab_problems(step: CampaignStep) -> list[Problem]:
    """An A/B test: a second approved version of the same channel, a test share, a window, a metric."""
    from portal.content.models import AssetVersion, VersionStatus

    ab = (step.config or {}).get("ab")
    if not ab:
        return []
    problems = []
    other = db.session.get(AssetVersion, ab.get("version_b")) if ab.get("version_b") else None
    if other is None or other.status != VersionStatus.APPROVED:
        problems.append(Problem(step.id, N_("Variant B must be approved content.")))
    elif step.channel and other.asset.kind != step.channel:
        problems.append(Problem(step.id, N_("Variant B does not fit the step's channel.")))
    elif other.id == step.content_version_id:
        problems.append(Problem(step.id, N_("Variant B must differ from variant A.")))
    if not isinstance(ab.get("share"), int) or not 1 <= ab["share"] <= 50:
        problems.append(Problem(step.id, N_("The A/B test share is 1 to 50 percent of the audience.")))
    if not isinstance(ab.get("window_hours"), int) or ab["window_hours"] < 1:
        problems.append(Problem(step.id, N_("The A/B test window is at least one hour.")))
    if ab.get("metric") not in AB_METRICS:
        problems.append(Problem(step.id, N_("Choose how the winner is picked: opens or clicks.")))
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
    step = _step(step_id)
    _editable(actor, get(step.campaign_id))
    newer = newer_approved_version(step)
    if newer is None:
        raise CampaignError("no_newer_version")
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
        problems.append(Problem(None, N_("Choose the audience (a segment).")))
    else:
        try:
            if count_segment(campaign.segment_id) == 0:
                problems.append(Problem(None, N_("The audience is empty.")))
        except SegmentRuleError as exc:
            problems.append(Problem(None, f"The audience's rules are invalid: {exc}"))
    if campaign.entry_kind == "event" and not campaign.entry_event:
        problems.append(Problem(None, N_("Choose the event that starts the campaign.")))
    if not any(s.kind == StepKind.MESSAGE for s in campaign.steps):
        problems.append(Problem(None, N_("Add at least one message step.")))
    for step in campaign.steps:
        config = step.config or {}
        if step.kind == StepKind.MESSAGE:
            version = db.session.get(AssetVersion, step.content_version_id) if step.content_version_id else None
            if version is None:
                problems.append(Problem(step.id, N_("This message step has no content.")))
            elif version.status != VersionStatus.APPROVED:
                problems.append(Problem(step.id, N_("This message step uses content that is not approved.")))
            elif step.channel and version.asset.kind != step.channel:
                problems.append(Problem(step.id, N_("The content does not fit the step's channel.")))
            problems += _ab_problems(step)
        elif step.kind == StepKind.DELAY:
            days, hours = config.get("days", 0), config.get("hours", 0)
            if not isinstance(days, int) or not isinstance(hours, int) or days < 0 or hours < 0:
                problems.append(Problem(step.id, N_("A delay cannot be negative.")))
            elif days == 0 and hours == 0:
                problems.append(Problem(step.id, N_("A delay of nothing: remove it or give it a length.")))
        elif step.kind == StepKind.BRANCH:
            if config.get("condition") not in BRANCH_CONDITIONS:
                problems.append(Problem(step.id, N_("Choose what the branch checks.")))
            if not path(campaign, step.id, "yes") and not path(campaign, step.id, "no"):
                problems.append(Problem(step.id, N_("A branch needs at least one path.")))
        elif step.kind == StepKind.ACTION:
            if config.get("type") not in ACTION_TYPES:
                problems.append(Problem(step.id, N_("Choose what the action does.")))
            elif config.get("type") in ("add_tag", "remove_tag") and not config.get("value"):
                problems.append(Problem(step.id, N_("Name the tag.")))
    return problems
