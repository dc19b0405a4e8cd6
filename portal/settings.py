"""Portal-wide settings editable in the app (thresholds, defaults), as a key/value table.

Each setting has a default in DEFAULTS; the table holds only what someone changed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from portal import audit
from portal.extensions import db

DEFAULTS: dict[str, Any] = {
    # Lead scoring (the operating guide's table)
    "scoring.base_score": 60,
    "scoring.mql_threshold": 80,
    "scoring.mql_tag": "MQL",
    # Lifecycle stages
    "lifecycle.new_days": 30,
    "lifecycle.growing_min_purchases": 1,
    "lifecycle.stable_min_purchases": 3,
    "lifecycle.dormant_days": 90,
    # Frequency caps on marketing messages (any channel per day; email per week to prospects,
    # the contacts in the "new" lifecycle stage, who have bought nothing yet).
    "sending.max_per_contact_per_day": 2,
    "sending.max_emails_per_prospect_per_week": 2,
    # Alerts on running campaigns, after alerts.min_attempts settled messages: over the whole
    # campaign (since its last resume after an alert) and over its last alerts.window ones.
    "alerts.auto_pause": True,
    "alerts.min_attempts": 100,
    "alerts.window": 1000,
    "alerts.min_delivery_rate": 90,
    "alerts.max_bounce_rate": 5,
    # WeCom's published limits on mass messages a customer may receive from the company:
    # the planner leaves out (reason wecom_limit) a customer who has had them already.
    "wecom.max_per_customer_per_day": 1,
    "wecom.max_per_customer_per_month": 4,
    # Pacing per destination (portal/delivery/pacing.py), messages per minute; 0 = no limit.
    # The group robot accepts 20 a minute (errcode 45009 beyond); the SMS gateway's contract.
    "pacing.robot_per_minute": 20,
    "pacing.sms_per_minute": 600,
    # Email per recipient domain: "domain=per minute" pairs; other domains are not paced
    # until they answer 421 / 4xx "too many", which slows that domain alone.
    "pacing.email_domains": (
        "qq.com=600, foxmail.com=600, 163.com=300, 126.com=300, yeah.net=300, sina.com=300, "
        "sohu.com=300, gmail.com=1200, outlook.com=600, hotmail.com=600, live.com=600, yahoo.com=600"
    ),
}


class Setting(db.Model):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


def get(key: str) -> Any:
    row = db.session.get(Setting, key)
    return row.value if row is not None else DEFAULTS[key]


def set_value(actor: Any, key: str, value: Any) -> None:
    if key not in DEFAULTS:
        raise KeyError(key)
    row = db.session.get(Setting, key)
    before = row.value if row is not None else DEFAULTS[key]
    if row is None:
        db.session.add(Setting(key=key, value=value))
    else:
        row.value = value
    audit.record(actor, "setting.changed", f"setting:{key}", {"setting": key, "before": before, "after": value})
