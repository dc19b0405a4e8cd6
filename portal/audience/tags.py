"""Managing tags themselves: create, rename, merge, delete, and how many contacts carry each."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from portal import audit
from portal.audience.models import ContactTag, Tag, TagRule
from portal.audience.service import AudienceError
from portal.extensions import db


def tags_with_counts() -> list[tuple[Tag, int]]:
    """Every tag with the number of contacts carrying it now, by name."""
    counts = select(ContactTag.tag_id, func.count().label("contacts")).group_by(ContactTag.tag_id).subquery()
    rows = db.session.execute(
        select(Tag, func.coalesce(counts.c.contacts, 0)).outerjoin(counts, counts.c.tag_id == Tag.id).order_by(Tag.name)
    )
    return [(tag, count) for tag, count in rows]


def _tag(tag_id: int) -> Tag:
    tag = db.session.get(Tag, tag_id)
    if tag is None:
        raise AudienceError("no_such_tag")
    return tag


def _free_name(name: str, except_id: int | None = None) -> str:
    name = (name or "").strip()[:100]
    if not name:
        raise AudienceError("tag_name_empty")
    taken = db.session.scalar(select(Tag.id).where(Tag.name == name))
    if taken is not None and taken != except_id:
        raise AudienceError("tag_name_taken", name=name)
    return name


def create_tag(actor: Any, name: str, description: str = "") -> Tag:
    tag = Tag(name=_free_name(name), description=(description or "").strip())
    db.session.add(tag)
    db.session.flush()
    audit.record(actor, "tag.created", f"tag:{tag.id}", {"name": tag.name})
    db.session.commit()
    return tag


def rename_tag(actor: Any, tag_id: int, name: str) -> Tag:
    """Rename a tag; segments and tag rules that name it follow the new name."""
    from portal.audience.models import Segment

    tag = _tag(tag_id)
    new_name = _free_name(name, except_id=tag.id)
    if new_name == tag.name:
        return tag
    before = tag.name
    tag.name = new_name
    for owner in (*db.session.scalars(select(Segment)), *db.session.scalars(select(TagRule))):
        owner.rules = _renamed_in_rules(owner.rules, before, new_name)
    audit.record(actor, "tag.renamed", f"tag:{tag.id}", {"before": before, "after": new_name})
    db.session.commit()
    return tag


def _renamed_in_rules(node: Any, before: str, after: str) -> Any:
    if not isinstance(node, dict):
        return node
    if "items" in node:
        return {**node, "items": [_renamed_in_rules(item, before, after) for item in node["items"]]}
    if node.get("field") == "tag" and node.get("value") == before:
        return {**node, "value": after}
    return node


def merge_tags(actor: Any, source_id: int, into_id: int) -> int:
    """Give every contact of `source` the tag `into`, then delete `source`; returns how many
    contacts gained `into`. Tag rules of `source` now keep `into`."""
    if source_id == into_id:
        raise AudienceError("merge_into_itself")
    source, into = _tag(source_id), _tag(into_id)
    already = select(ContactTag.contact_id).where(ContactTag.tag_id == into.id)
    moved = (
        db.session.execute(
            update(ContactTag)
            .where(ContactTag.tag_id == source.id, ContactTag.contact_id.not_in(already))
            .values(tag_id=into.id)
        ).rowcount
        or 0
    )
    db.session.execute(delete(ContactTag).where(ContactTag.tag_id == source.id))
    db.session.execute(update(TagRule).where(TagRule.tag_id == source.id).values(tag_id=into.id))
    rename_in = source.name
    db.session.delete(source)
    db.session.flush()
    from portal.audience.models import Segment

    for owner in (*db.session.scalars(select(Segment)), *db.session.scalars(select(TagRule))):
        owner.rules = _renamed_in_rules(owner.rules, rename_in, into.name)
    audit.record(actor, "tag.merged", f"tag:{into.id}", {"source": rename_in, "into": into.name, "count": moved})
    db.session.commit()
    return moved


def delete_tag(actor: Any, tag_id: int) -> int:
    """Delete a tag, take it off every contact and drop its tag rules; returns how many contacts lost it."""
    tag = _tag(tag_id)
    count = db.session.scalar(select(func.count()).where(ContactTag.tag_id == tag.id)) or 0
    db.session.execute(delete(ContactTag).where(ContactTag.tag_id == tag.id))
    db.session.execute(delete(TagRule).where(TagRule.tag_id == tag.id))
    audit.record(actor, "tag.deleted", f"tag:{tag.id}", {"name": tag.name, "count": count})
    db.session.delete(tag)
    db.session.commit()
    return count
