"""Segments: nested AND/OR rules over contacts, compiled to ONE SQL query.

The same compiled `select(Contact.id)` counts a segment, samples it, exports it, drives tag
rules, and feeds the send planner's INSERT ... SELECT. Rules are JSON:

    {"op": "and", "items": [
        {"field": "region", "operator": "eq", "value": "华东"},
        {"field": "tag", "operator": "has", "value": "高意向客户"},
        {"field": "score", "operator": "gte", "value": 70},
        {"op": "or", "items": [
            {"field": "event.purchase", "operator": "eq", "value": 0, "days": 90},
            {"field": "event.email_click", "operator": "gte", "value": 1, "days": 7,
             "property": "url", "contains": "pricing"}]}]}
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, exists, false, func, not_, or_, select, true
from sqlalchemy.sql import ColumnElement, Select

from portal.audience.models import (
    Channel,
    ConsentStatus,
    Contact,
    ContactConsent,
    ContactEvent,
    ContactTag,
    EventKind,
    LifecycleStage,
    Segment,
    Tag,
)
from portal.audience.normalise import REGION_GROUPS, province
from portal.extensions import db
from portal.labels import SEGMENT_FIELDS
from portal.models_base import utcnow
from portal.refusals import Refusal

TEXT_FIELDS = ("name", "email", "mobile", "company", "industry", "province", "city", "company_size")
TEXT_OPERATORS = ("eq", "ne", "contains", "in", "empty", "not_empty")
NUMBER_OPERATORS = ("eq", "gte", "lte", "between")
MAX_DEPTH = 5
MAX_CONDITIONS = 50


class SegmentRuleError(Refusal, ValueError):
    """The rules are not valid: a code and the condition's field, made a sentence when shown."""

    messages = {
        "unknown_operator": _l("“%(field)s”: this comparison does not fit the field."),
        "whole_number": _l("“%(field)s”: a whole number is needed."),
        "between_two_numbers": _l("“%(field)s”: “between” needs two numbers, separated by a comma."),
        "too_deep": _l("Groups may nest at most %(depth)s deep."),
        "bad_group": _l("A group combines its conditions with “all of” or “any of”."),
        "too_many": _l("A segment has at most %(count)s conditions."),
        "unknown_region": _l("“%(value)s” is not a region; choose one of %(regions)s."),
        "attribute_name": _l("Name the custom field."),
        "unknown_stage": _l("“%(value)s” is not a lifecycle stage."),
        "tag_operator": _l("A tag condition is “has” or “has not”."),
        "unknown_channel": _l("Unknown channel."),
        "consent_value": _l("Consent is granted, withdrawn or not given."),
        "days_operator": _l("“%(field)s”: use “at most” (within N days) or “at least” (N days ago or more)."),
        "unknown_field": _l("Unknown field “%(field)s”."),
        "unknown_event": _l("Unknown event “%(field)s”."),
        "not_a_group": _l("The rules must be a group."),
        "name_missing": _l("Name the segment."),
        "no_such_segment": _l("No such segment."),
    }

    def sentence_params(self) -> dict[str, Any]:
        from portal.labels import join_list

        params = dict(self.params)
        if isinstance(params.get("regions"), list):
            params["regions"] = join_list(params["regions"])
        return params


def _text_condition(column, operator: str, value: Any) -> ColumnElement:
    if operator == "eq":
        return column == str(value)
    if operator == "ne":
        return or_(column != str(value), column.is_(None))
    if operator == "contains":
        return column.contains(str(value), autoescape=True)
    if operator == "in":
        values = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
        return column.in_([str(v) for v in values if str(v)])
    if operator == "empty":
        return or_(column.is_(None), column == "")
    if operator == "not_empty":
        return and_(column.is_not(None), column != "")
    raise SegmentRuleError("unknown_operator", field=operator)


def _number(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise SegmentRuleError("whole_number", field=where) from exc


def _number_condition(column, operator: str, value: Any, where: str) -> ColumnElement:
    if operator == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise SegmentRuleError("between_two_numbers", field=where)
        return column.between(_number(value[0], where), _number(value[1], where))
    number = _number(value, where)
    if operator == "eq":
        return column == number
    if operator == "gte":
        return column >= number
    if operator == "lte":
        return column <= number
    raise SegmentRuleError("unknown_operator", field=where)


class _Compiler:
    def __init__(self) -> None:
        self.now = utcnow()
        self.conditions = 0
        self._tag_ids: dict[str, int | None] = {}

    def tag_id(self, name: str) -> int | None:
        if name not in self._tag_ids:
            self._tag_ids[name] = db.session.scalar(select(Tag.id).where(Tag.name == name))
        return self._tag_ids[name]

    def group(self, node: dict[str, Any], depth: int = 0) -> ColumnElement:
        if depth > MAX_DEPTH:
            raise SegmentRuleError("too_deep", depth=MAX_DEPTH)
        op = node.get("op", "and")
        if op not in ("and", "or"):
            raise SegmentRuleError("bad_group")
        items = node.get("items") or []
        parts = [self.group(item, depth + 1) if "items" in item else self.condition(item) for item in items]
        if not parts:
            return true()
        combined = and_(*parts) if op == "and" else or_(*parts)
        return not_(combined) if node.get("not") else combined

    def condition(self, cond: dict[str, Any]) -> ColumnElement:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SegmentRuleError("too_many", count=MAX_CONDITIONS)
        field = str(cond.get("field", ""))
        operator = str(cond.get("operator", "eq"))
        value = cond.get("value")
        where = SEGMENT_FIELDS.get(field, field)
        if field in TEXT_FIELDS:
            column = getattr(Contact, field)
            if field == "province" and operator in ("eq", "ne"):
                value = province(str(value))
            return _text_condition(column, operator, value)
        if field == "region":
            if str(value) not in REGION_GROUPS:
                raise SegmentRuleError("unknown_region", value=value, regions=list(REGION_GROUPS))
            inside = Contact.region == str(value)
            return inside if operator == "eq" else not_(inside)
        if field.startswith("attributes."):
            key = field.split(".", 1)[1]
            if not key:
                raise SegmentRuleError("attribute_name")
            return _text_condition(Contact.attributes[key].as_string(), operator, value)
        if field == "lifecycle_stage":
            if operator in ("eq", "ne") and value not in set(LifecycleStage):
                raise SegmentRuleError("unknown_stage", value=value)
            return _text_condition(Contact.lifecycle_stage, operator, value)
        if field == "score":
            return _number_condition(Contact.score, operator, value, where)
        if field == "tag":
            tag_id = self.tag_id(str(value))
            has = (
                exists().where(ContactTag.contact_id == Contact.id, ContactTag.tag_id == tag_id)
                if tag_id is not None
                else false()
            )
            if operator == "has":
                return has
            if operator == "has_not":
                return not_(has)
            raise SegmentRuleError("tag_operator")
        if field.startswith("consent."):
            channel = field.split(".", 1)[1]
            if channel not in set(Channel):
                raise SegmentRuleError("unknown_channel")
            if value not in set(ConsentStatus):
                raise SegmentRuleError("consent_value")
            recorded = exists().where(
                ContactConsent.contact_id == Contact.id,
                ContactConsent.channel == channel,
                ContactConsent.status == value,
            )
            if value == ConsentStatus.NONE:
                recorded = not_(
                    exists().where(
                        ContactConsent.contact_id == Contact.id,
                        ContactConsent.channel == channel,
                        ContactConsent.status != ConsentStatus.NONE,
                    )
                )
            return recorded if operator == "eq" else not_(recorded)
        if field in ("unsubscribed", "suppressed"):
            flag = getattr(Contact, field).is_(True)
            return flag if bool(value) else not_(flag)
        if field in ("created_days", "last_activity_days"):
            column = Contact.created_at if field == "created_days" else Contact.last_activity_at
            days = _number(value, where)
            cutoff = self.now - timedelta(days=days)
            if operator == "lte":  # within the last N days
                return column >= cutoff
            if operator == "gte":  # N days ago or earlier (never, for last activity)
                return or_(column < cutoff, column.is_(None)) if field == "last_activity_days" else column < cutoff
            raise SegmentRuleError("days_operator", field=where)
        if field.startswith("event."):
            return self.event_count(field.split(".", 1)[1], operator, value, cond, where)
        raise SegmentRuleError("unknown_field", field=field)

    def event_count(self, kind: str, operator: str, value: Any, cond: dict[str, Any], where: str) -> ColumnElement:
        if kind not in set(EventKind):
            raise SegmentRuleError("unknown_event", field=kind)
        filters = [ContactEvent.contact_id == Contact.id, ContactEvent.kind == kind]
        if cond.get("days") not in (None, ""):
            filters.append(ContactEvent.occurred_at >= self.now - timedelta(days=_number(cond["days"], where)))
        if cond.get("property") and cond.get("contains"):
            prop = ContactEvent.properties[str(cond["property"])].as_string()
            filters.append(prop.contains(str(cond["contains"]), autoescape=True))
        number = _number(value, where) if operator != "between" else None
        # EXISTS is what the database does best: use it for "at least one" and "none".
        if operator == "gte" and number is not None and number <= 1:
            return exists().where(*filters) if number == 1 else true()
        if operator in ("eq", "lte") and number == 0:
            return not_(exists().where(*filters))
        count = select(func.count()).where(*filters).scalar_subquery()
        return _number_condition(count, operator, value, where)


def compile_rules(rules: dict[str, Any]) -> Select:
    """`select(Contact.id)` of every contact matching `rules`; raises SegmentRuleError."""
    if not isinstance(rules, dict):
        raise SegmentRuleError("not_a_group")
    return select(Contact.id).where(_Compiler().group(rules))


def segment_query(segment_or_rules: int | dict[str, Any]) -> Select:
    """The query the send planner, exports and tag rules use."""
    if isinstance(segment_or_rules, int):
        segment = db.session.get(Segment, segment_or_rules)
        if segment is None:
            raise SegmentRuleError("no_such_segment")
        return compile_rules(segment.rules)
    return compile_rules(segment_or_rules)


def count_segment(segment_or_rules: int | dict[str, Any]) -> int:
    query = segment_query(segment_or_rules)
    return db.session.scalar(select(func.count()).select_from(query.subquery())) or 0


def sample_segment(segment_or_rules: int | dict[str, Any], limit: int = 10) -> list[Contact]:
    ids = segment_query(segment_or_rules).order_by(Contact.id.desc()).limit(limit)
    return list(db.session.scalars(select(Contact).where(Contact.id.in_(ids)).order_by(Contact.id.desc())))


def save_segment(actor, name: str, rules: dict[str, Any], segment_id: int | None = None) -> Segment:
    from portal import audit

    compile_rules(rules)
    segment = db.session.get(Segment, segment_id) if segment_id else Segment(created_by_id=actor.id)
    segment.name, segment.rules = name.strip()[:200], rules
    db.session.add(segment)
    db.session.flush()
    audit.record(actor, "segment.saved", f"segment:{segment.id}", {"name": segment.name, "rules": rules})
    db.session.commit()
    return segment


def delete_segment(actor, segment_id: int) -> None:
    """Delete a segment. Campaigns keep the audience they already planned; a campaign that
    still names the segment refuses to be deleted away (the database keeps it)."""
    from portal import audit
    from portal.audience.service import AudienceError

    segment = db.session.get(Segment, segment_id)
    if segment is None:
        raise AudienceError("no_such_segment")
    if _used_by_campaigns(segment.id):
        raise AudienceError("segment_in_use", count=_used_by_campaigns(segment.id))
    audit.record(actor, "segment.deleted", f"segment:{segment.id}", {"name": segment.name})
    db.session.delete(segment)
    db.session.commit()


def _used_by_campaigns(segment_id: int) -> int:
    from portal.campaigns.models import Campaign

    return db.session.scalar(select(func.count()).where(Campaign.segment_id == segment_id)) or 0
