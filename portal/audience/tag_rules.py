"""Tag rules: a tag kept in step with a segment-style condition, in two set-based
statements per rule (add the missing, remove the no-longer-matching)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, insert, literal, select

from portal import audit
from portal.audience.models import ContactTag, Tag, TagRule
from portal.audience.segments import compile_rules
from portal.audience.service import AudienceError
from portal.extensions import db
from portal.models_base import utcnow


def save_rule(actor: Any, tag_name: str, rules: dict[str, Any], rule_id: int | None = None) -> TagRule:
    from portal.audience.service import tag_by_name

    compile_rules(rules)  # refuses invalid rules before saving
    tag = tag_by_name(tag_name)
    rule = db.session.get(TagRule, rule_id) if rule_id else TagRule()
    if rule is None:
        raise AudienceError("no_such_rule")
    rule.tag_id, rule.rules, rule.enabled = tag.id, rules, True
    db.session.add(rule)
    db.session.flush()
    audit.record(actor, "tag_rule.saved", f"tag_rule:{rule.id}", {"tag": tag.name, "rules": rules})
    db.session.commit()
    return rule


def _rule(rule_id: int) -> TagRule:
    rule = db.session.get(TagRule, rule_id)
    if rule is None:
        raise AudienceError("no_such_rule")
    return rule


def set_enabled(actor: Any, rule_id: int, enabled: bool) -> TagRule:
    """Disable a rule (its tags stay where they are) or enable it again."""
    rule = _rule(rule_id)
    if rule.enabled != enabled:
        rule.enabled = enabled
        tag = db.session.get(Tag, rule.tag_id)
        audit.record(
            actor, "tag_rule.enabled" if enabled else "tag_rule.disabled", f"tag_rule:{rule.id}", {"tag": tag.name}
        )
    db.session.commit()
    return rule


def delete_rule(actor: Any, rule_id: int, remove_tags: bool = False) -> int:
    """Delete a rule; with `remove_tags`, also take its tag off the contacts the rule gave it to.
    Returns how many contacts lost the tag."""
    rule = _rule(rule_id)
    removed = 0
    if remove_tags:
        removed = (
            db.session.execute(
                delete(ContactTag).where(ContactTag.tag_id == rule.tag_id, ContactTag.source == f"rule:{rule.id}")
            ).rowcount
            or 0
        )
    tag = db.session.get(Tag, rule.tag_id)
    audit.record(actor, "tag_rule.deleted", f"tag_rule:{rule.id}", {"tag": tag.name, "removed": removed})
    db.session.delete(rule)
    db.session.commit()
    return removed


def evaluate(rule_id: int) -> tuple[int, int]:
    """Bring the rule's tag in line with its condition; returns (added, removed)."""
    rule = db.session.get(TagRule, rule_id)
    if rule is None or not rule.enabled:
        return (0, 0)
    source = f"rule:{rule.id}"
    matching = compile_rules(rule.rules)
    already = select(ContactTag.contact_id).where(ContactTag.tag_id == rule.tag_id)
    # Counted through RETURNING: INSERT ... SELECT reports no rowcount through psycopg here.
    added = db.session.execute(
        insert(ContactTag)
        .from_select(
            ["contact_id", "tag_id", "source", "added_at"],
            select(
                matching.selected_columns[0],
                literal(rule.tag_id),
                literal(source),
                literal(utcnow(), ContactTag.added_at.type),
            )
            .where(matching.whereclause if matching.whereclause is not None else literal(True))
            .where(matching.selected_columns[0].not_in(already)),
        )
        .returning(ContactTag.contact_id)
    ).all()
    # Only tags this rule gave are taken away; a tag added by hand stays.
    removed = db.session.execute(
        delete(ContactTag).where(
            and_(ContactTag.tag_id == rule.tag_id, ContactTag.source == source, ContactTag.contact_id.not_in(matching))
        )
    ).rowcount
    rule.last_run_at = utcnow()
    db.session.commit()
    return (len(added), removed or 0)


def evaluate_all() -> dict[int, tuple[int, int]]:
    return {rule_id: evaluate(rule_id) for rule_id in db.session.scalars(select(TagRule.id).where(TagRule.enabled))}


def list_rules() -> list[tuple[TagRule, Tag]]:
    return list(db.session.execute(select(TagRule, Tag).join(Tag, Tag.id == TagRule.tag_id).order_by(Tag.name)))


PENDING_KEY = "audience:tag-rules-pending"


def schedule_evaluation() -> None:
    """Ask a worker to re-evaluate the tag rules soon; many changes in a minute make one run."""
    from portal.queue import enqueue, redis_connection

    if not db.session.scalar(select(TagRule.id).where(TagRule.enabled).limit(1)):
        return
    if redis_connection().set(PENDING_KEY, "1", nx=True, ex=60):
        enqueue("jobs.audience.evaluate_tag_rules", kind="tag_rules", track=False, timeout=1800)
