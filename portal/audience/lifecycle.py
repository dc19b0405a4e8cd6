"""Lifecycle stages from events, recomputed set-based in SQL with configurable thresholds:

new (registered within N days, no purchase) · growing (1-2 purchases) ·
stable (3 or more purchases) · dormant (no interaction for 90 days, whatever else)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func, insert, literal, or_, select, update

from portal import settings
from portal.audience.models import Contact, ContactEvent, EventKind, LifecycleStage
from portal.extensions import db
from portal.models_base import utcnow


def stage_expression():
    now = utcnow()
    purchases = (
        select(func.count())
        .where(ContactEvent.contact_id == Contact.id, ContactEvent.kind == EventKind.PURCHASE)
        .scalar_subquery()
    )
    dormant_cutoff = now - timedelta(days=settings.get("lifecycle.dormant_days"))
    last_touch = func.coalesce(Contact.last_activity_at, Contact.created_at)
    return case(
        (last_touch < dormant_cutoff, literal(LifecycleStage.DORMANT.value)),
        (purchases >= settings.get("lifecycle.stable_min_purchases"), literal(LifecycleStage.STABLE.value)),
        (purchases >= settings.get("lifecycle.growing_min_purchases"), literal(LifecycleStage.GROWING.value)),
        else_=literal(LifecycleStage.NEW.value),
    )


def recompute_stages() -> int:
    """Update every contact whose stage changed, recording a stage_change event for each.
    Two statements whatever the number of contacts. Returns how many changed."""
    stage = stage_expression()
    changed = (
        select(Contact.id, Contact.lifecycle_stage.label("before"), stage.label("after"))
        .where(or_(Contact.lifecycle_stage != stage, Contact.lifecycle_stage.is_(None)))
        .subquery()
    )
    now = utcnow()
    # Counted through RETURNING: INSERT ... SELECT reports no rowcount through psycopg here.
    moved = db.session.execute(
        insert(ContactEvent)
        .from_select(
            ["contact_id", "kind", "occurred_at", "properties", "source"],
            select(
                changed.c.id,
                literal(EventKind.STAGE_CHANGE.value),
                literal(now, ContactEvent.occurred_at.type),
                func.json_object("from", changed.c.before, "to", changed.c.after)
                if db.engine.dialect.name == "sqlite"
                else func.json_build_object("from", changed.c.before, "to", changed.c.after),
                literal("lifecycle"),
            ),
        )
        .returning(ContactEvent.id)
    ).all()
    db.session.execute(update(Contact).where(Contact.lifecycle_stage != stage).values(lifecycle_stage=stage))
    db.session.commit()
    return len(moved)
