"""Internal notices through the WeCom group robot (`WECOM_WEBHOOK_URL`): alerts and sales
hand-offs posted into the team's group chat.

    queue_robot_notice("campaign.follow_up", contact="张三", campaign="春季")   # caller's transaction
    post_robot_notices(robot, pacer)     # jobs.sending.post_robot_notices, every few seconds

A notice is a row until the robot accepts it. The robot takes 20 messages a minute
(setting pacing.robot_per_minute); the poster reserves that many per window from the
shared pacer and leaves the rest due at the next window; an errcode 45009 (someone else
used the robot's minute) leaves the notice pending for a back-off of one window: slowed
down, never lost or counted as a failure. A notice that fails for good (the robot refuses
it: too long, bad format) is kept as failed with the robot's answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import select

from portal.delivery.channels.base import Outcome
from portal.delivery.channels.wecom import WeComRobot
from portal.delivery.models import RobotNotice
from portal.delivery.pacing import Pacer, robot_key
from portal.extensions import db
from portal.models_base import utcnow

# Notices taken per run: a few windows' worth at the robot's rate.
BATCH = 100
# A notice the robot keeps refusing for a temporary reason is given up after this many tries.
MAX_ATTEMPTS = 20


def queue_robot_notice(kind: str, **params: Any) -> None:
    """Keep a notice for the group robot, in the caller's transaction; nothing when no robot
    is configured."""
    if current_app.config.get("WECOM_WEBHOOK_URL"):
        db.session.add(RobotNotice(kind=kind, params=params or None, due_at=utcnow()))


def notice_text(notice: RobotNotice) -> str:
    """The notice as a sentence in the portal's default language (the group reads one)."""
    from portal.labels import notification_text

    with force_locale(current_app.config["BABEL_DEFAULT_LOCALE"]):
        return notification_text(notice.kind, notice.params, fallback=notice.kind)


def post_robot_notices(robot: WeComRobot, pacer: Pacer, now: datetime | None = None) -> dict[str, int]:
    """Post the due notices the robot's pace allows; returns counts. Idempotent: a posted
    notice is never posted again, and rows are locked while they are posted (SKIP LOCKED)."""
    now = now or utcnow()
    counts = {"posted": 0, "failed": 0, "waiting": 0}
    destination = robot_key(robot.webhook_url)
    notices = list(
        db.session.scalars(
            select(RobotNotice)
            .where(RobotNotice.status == "pending", RobotNotice.due_at <= now)
            .order_by(RobotNotice.due_at, RobotNotice.id)
            .limit(BATCH)
            .with_for_update(skip_locked=True)
        )
    )
    if not notices:
        db.session.commit()
        return counts
    slowed = pacer.slowed([destination]).get(destination)
    reserved = 0 if slowed else pacer.reserve({destination: len(notices)})[destination]
    allowed, tried = reserved, 0
    wait_until = datetime.fromtimestamp(slowed or pacer.next_window(), UTC)
    for number, notice in enumerate(notices):
        if number >= allowed:
            notice.due_at = wait_until
            counts["waiting"] += 1
            continue
        result = robot.send(notice_text(notice))
        tried += 1
        notice.attempts += 1
        notice.result = f"{result.code} {result.detail} {result.message}".strip()[:500]
        if result.ok:
            notice.status, notice.sent_at, notice.result = "sent", utcnow(), ""
            counts["posted"] += 1
        elif result.outcome is Outcome.RETRY and notice.attempts < MAX_ATTEMPTS:
            if result.detail == "45009":
                # Over the robot's minute after all: wait a window, and so does the rest.
                allowed = number
                wait_until = datetime.fromtimestamp(pacer.slow_down(destination, base=pacer.window), UTC)
                notice.attempts -= 1
            notice.due_at = wait_until
            counts["waiting"] += 1
        else:
            notice.status = "failed"
            counts["failed"] += 1
    pacer.give_back({destination: reserved - tried})
    if counts["posted"] and allowed == reserved:
        pacer.recovered(destination)  # taken again without a refusal: the back-off starts over
    db.session.commit()
    return counts
