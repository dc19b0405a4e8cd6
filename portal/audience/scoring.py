"""Lead scoring: events earn points by the editable rules; crossing the MQL threshold tags
the contact, puts it on the timeline, and tells the contact's owner."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from portal import settings
from portal.audience.models import Contact, ContactEvent, ContactTag, EventKind, ScoredEvent, ScoringRule
from portal.extensions import db
from portal.notify import notify


def points_for(event: ContactEvent, rules: list[ScoringRule]) -> int:
    total = 0
    for rule in rules:
        if rule.event_kind != event.kind:
            continue
        if rule.property_name:
            value = str((event.properties or {}).get(rule.property_name, ""))
            if rule.property_contains.lower() not in value.lower():
                continue
        total += rule.points
    return total


def score_event(event_id: int) -> int:
    """Apply the scoring rules to one event, once: scoring it again changes nothing.
    Returns the points given."""
    from portal.audience.service import record_event, tag_by_name

    if db.session.get(ScoredEvent, event_id) is not None:
        return 0
    event = db.session.get(ContactEvent, event_id)
    if event is None:
        return 0
    points = points_for(event, list(db.session.scalars(select(ScoringRule))))
    db.session.add(ScoredEvent(event_id=event_id, points=points))
    if not points:
        db.session.commit()
        return 0
    contact = db.session.get(Contact, event.contact_id)
    threshold = settings.get("scoring.mql_threshold")
    before = contact.score
    contact.score = before + points
    crossed = before < threshold <= contact.score
    if crossed:
        tag = tag_by_name(settings.get("scoring.mql_tag"))
        if db.session.get(ContactTag, (contact.id, tag.id)) is None:
            db.session.add(ContactTag(contact_id=contact.id, tag_id=tag.id, source="scoring"))
        if contact.owner_id:
            notify(
                [contact.owner_id],
                link=f"/audience/contacts/{contact.id}",
                kind="contact.became_mql",
                contact=contact.name or contact.email or contact.mobile,
                score=contact.score,
            )
    db.session.commit()
    if crossed:
        record_event(contact.id, EventKind.MQL, properties={"score": contact.score, "threshold": threshold})
    return points


def list_rules() -> list[ScoringRule]:
    return list(db.session.scalars(select(ScoringRule).order_by(ScoringRule.id)))


def save_rule(
    actor: Any,
    label: str,
    event_kind: str,
    points: int,
    property_name: str = "",
    property_contains: str = "",
    rule_id: int | None = None,
) -> ScoringRule:
    from portal import audit
    from portal.audience.service import AudienceError

    if event_kind not in set(EventKind):
        raise AudienceError("unknown_event_kind")
    rule = db.session.get(ScoringRule, rule_id) if rule_id else ScoringRule()
    rule.label, rule.event_kind, rule.points = label.strip() or event_kind, event_kind, int(points)
    rule.property_name, rule.property_contains = property_name.strip(), property_contains.strip()
    db.session.add(rule)
    db.session.flush()
    audit.record(
        actor,
        "scoring.rule_saved",
        f"scoring_rule:{rule.id}",
        {
            "event": event_kind,
            "points": rule.points,
            "property": rule.property_name,
            "contains": rule.property_contains,
        },
    )
    db.session.commit()
    return rule
