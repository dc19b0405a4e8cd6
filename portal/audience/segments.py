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
from portal.models_base import utcnow

TEXT_FIELDS = ("name", "email", "mobile", "company", "industry", "province", "city", "company_size")
TEXT_OPERATORS = ("eq", "ne", "contains", "in", "empty", "not_empty")
NUMBER_OPERATORS = ("eq", "gte", "lte", "between")
MAX_DEPTH = 5
MAX_CONDITIONS = 50


class SegmentRuleError(ValueError):
    """The rules are not valid; the message says which condition and why."""


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
    raise SegmentRuleError(f"unknown operator '{operator}'")


def _number(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise SegmentRuleError(f"{where}: a whole number is needed") from exc


def _number_condition(column, operator: str, value: Any, where: str) -> ColumnElement:
    if operator == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise SegmentRuleError(f"{where}: 'between' needs two numbers")
        return column.between(_number(value[0], where), _number(value[1], where))
    number = _number(value, where)
    if operator == "eq":
        return column == number
    if operator == "gte":
        return column >= number
    if operator == "lte":
        return column <= number
    raise SegmentRuleError(f"{where}: unknown operator '{operator}'")


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
            raise SegmentRuleError(f"groups may nest at most {MAX_DEPTH} deep")
        op = node.get("op", "and")
        if op not in ("and", "or"):
            raise SegmentRuleError(f"a group is 'and' or 'or', not '{op}'")
        items = node.get("items") or []
        parts = [self.group(item, depth + 1) if "items" in item else self.condition(item) for item in items]
        if not parts:
            return true()
        combined = and_(*parts) if op == "and" else or_(*parts)
        return not_(combined) if node.get("not") else combined

    def condition(self, cond: dict[str, Any]) -> ColumnElement:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise SegmentRuleError(f"at most {MAX_CONDITIONS} conditions")
        field = str(cond.get("field", ""))
        operator = str(cond.get("operator", "eq"))
        value = cond.get("value")
        where = f"condition '{field}'"
        if field in TEXT_FIELDS:
            column = getattr(Contact, field)
            if field == "province" and operator in ("eq", "ne"):
                value = province(str(value))
            return _text_condition(column, operator, value)
        if field == "region":
            provinces = REGION_GROUPS.get(str(value))
            if provinces is None:
                raise SegmentRuleError(f"{where}: unknown region '{value}' ({', '.join(REGION_GROUPS)})")
            inside = Contact.province.in_(provinces)
            return inside if operator == "eq" else not_(inside)
        if field.startswith("attributes."):
            key = field.split(".", 1)[1]
            if not key:
                raise SegmentRuleError(f"{where}: name the attribute")
            return _text_condition(Contact.attributes[key].as_string(), operator, value)
        if field == "lifecycle_stage":
            if operator in ("eq", "ne") and value not in set(LifecycleStage):
                raise SegmentRuleError(f"{where}: unknown stage '{value}'")
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
            raise SegmentRuleError(f"{where}: a tag condition is 'has' or 'has_not'")
        if field.startswith("consent."):
            channel = field.split(".", 1)[1]
            if channel not in set(Channel):
                raise SegmentRuleError(f"{where}: unknown channel '{channel}'")
            if value not in set(ConsentStatus):
                raise SegmentRuleError(f"{where}: consent is granted, withdrawn or none")
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
            raise SegmentRuleError(f"{where}: use 'lte' (within N days) or 'gte' (N days ago or more)")
        if field.startswith("event."):
            return self.event_count(field.split(".", 1)[1], operator, value, cond, where)
        raise SegmentRuleError(f"unknown field '{field}'")

    def event_count(self, kind: str, operator: str, value: Any, cond: dict[str, Any], where: str) -> ColumnElement:
        if kind not in set(EventKind):
            raise SegmentRuleError(f"{where}: unknown event '{kind}'")
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
        raise SegmentRuleError("rules must be a group")
    return select(Contact.id).where(_Compiler().group(rules))


def segment_query(segment_or_rules: int | dict[str, Any]) -> Select:
    """The query the send planner, exports and tag rules use."""
    if isinstance(segment_or_rules, int):
        segment = db.session.get(Segment, segment_or_rules)
        if segment is None:
            raise SegmentRuleError("no such segment")
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
