"""Forms of the audience pages, and the segment builder's form <-> rules translation."""

from __future__ import annotations

import re
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import EmailField, IntegerField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional

CONSENT_CHOICES = [
    SelectChoice("none", _l("No consent (excluded from marketing)")),
    SelectChoice("granted", _l("Consent granted")),
    SelectChoice("withdrawn", _l("Consent withdrawn")),
]


class UploadForm(FlaskForm):
    file = FileField(_l("CSV or Excel file"), validators=[FileRequired()])


class ImportOptionsForm(FlaskForm):
    merge_policy = SelectField(
        _l("When a contact exists already"),
        choices=[
            SelectChoice("fill", _l("Fill only its empty fields")),
            SelectChoice("overwrite", _l("Overwrite its fields")),
        ],
    )
    default_consent = SelectField(_l("Consent for rows without a consent value"), choices=CONSENT_CHOICES)


class EncodingForm(FlaskForm):
    encoding = SelectField(_l("Read the file as"), choices=[])


class ContactFieldsForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[Optional(), Length(max=320)])
    mobile = StringField(_l("Mobile number"), validators=[Optional(), Length(max=32)])
    name = StringField(_l("Full name"), validators=[Optional(), Length(max=200)])
    company = StringField(_l("Company"), validators=[Optional(), Length(max=200)])
    industry = StringField(_l("Industry"), validators=[Optional(), Length(max=100)])
    province = StringField(_l("Province"), validators=[Optional(), Length(max=50)])
    city = StringField(_l("City"), validators=[Optional(), Length(max=50)])
    company_size = StringField(_l("Company size"), validators=[Optional(), Length(max=32)])


class ContactForm(ContactFieldsForm):
    consent_email = SelectField(_l("Email consent"), choices=CONSENT_CHOICES)


class ContactEditForm(ContactFieldsForm):
    owner_id = SelectField(_l("Owner"), choices=[], validate_choice=True)


class TokenForm(FlaskForm):
    name = StringField(_l("Integration name"), validators=[DataRequired(), Length(max=100)])


class ScoringRuleForm(FlaskForm):
    label = StringField(_l("Label"), validators=[DataRequired(), Length(max=100)])
    event_kind = SelectField(_l("Event"), choices=[])
    property_name = StringField(_l("Property (optional)"), validators=[Optional(), Length(max=64)])
    property_contains = StringField(_l("contains"), validators=[Optional(), Length(max=200)])
    points = IntegerField(_l("Points"), validators=[NumberRange(min=-100, max=100)])


def owner_choices() -> list[SelectChoice]:
    """Active people who may own contacts, by name."""
    from sqlalchemy import select

    from portal.auth.models import User
    from portal.extensions import db

    people = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.name, User.email))
    return [SelectChoice("", _l("Nobody"))] + [SelectChoice(str(u.id), u.display_name) for u in people]


class TagRuleForm(FlaskForm):
    tag = StringField(_l("Tag"), validators=[DataRequired(), Length(max=100)])
    segment_id = SelectField(_l("Contacts matching the segment"), choices=[], validators=[DataRequired()])


# --- segment builder -----------------------------------------------------------------------

CONDITION_KEYS = ("field", "operator", "value", "days", "property", "contains")
PATH = re.compile(r"^r(\.\d+)*$")


def rules_from_form(form: dict[str, str], path: str = "r") -> dict[str, Any]:
    """Rebuild the nested rules from the builder's flat field names (r.op, r.0.field, r.1.op, r.1.0.field...)."""
    node: dict[str, Any] = {"op": form.get(f"{path}.op", "and"), "items": []}
    indexes = sorted(
        {
            int(key[len(path) + 1 :].split(".")[0])
            for key in form
            if key.startswith(path + ".") and key[len(path) + 1 :].split(".")[0].isdigit()
        }
    )
    for index in indexes:
        child = f"{path}.{index}"
        if f"{child}.op" in form:
            node["items"].append(rules_from_form(form, child))
        elif form.get(f"{child}.field"):
            condition = {key: form.get(f"{child}.{key}", "") for key in CONDITION_KEYS}
            node["items"].append({k: v for k, v in condition.items() if v != "" or k == "value"})
    return node


def coerce_values(node: dict[str, Any]) -> dict[str, Any]:
    """Numbers where the compiler expects numbers; lists for 'between' and 'in'."""
    items = []
    for item in node.get("items", []):
        if "items" in item:
            items.append(coerce_values(item))
            continue
        item = dict(item)
        value = item.get("value", "")
        if item.get("operator") == "between":
            item["value"] = [v.strip() for v in str(value).replace("，", ",").split(",")][:2]
        elif item.get("field") in ("score", "created_days", "last_activity_days") or str(
            item.get("field", "")
        ).startswith("event."):
            item["value"] = int(value) if str(value).strip().lstrip("-").isdigit() else value
        elif item.get("field") in ("unsubscribed", "suppressed"):
            item["value"] = str(value).lower() in ("1", "true", "yes", "是")
        items.append(item)
    return {**node, "items": items}


VALUELESS_OPERATORS = ("empty", "not_empty")


def without_blank_conditions(node: dict[str, Any]) -> dict[str, Any]:
    """The rules minus the conditions whose value is not typed yet (for the live preview)."""
    items = []
    for item in node.get("items", []):
        if "items" in item:
            items.append(without_blank_conditions(item))
        elif item.get("operator") in VALUELESS_OPERATORS or str(item.get("value", "")).strip():
            items.append(item)
    return {**node, "items": items}


def edit_rules(rules: dict[str, Any], action: str) -> dict[str, Any]:
    """Apply a builder button: add_condition:<path>, add_group:<path>, remove:<path>."""
    verb, _, path = action.partition(":")
    if not PATH.match(path):
        return rules
    steps = [int(p) for p in path.split(".")[1:]]
    if verb == "remove" and steps:
        parent = _walk(rules, steps[:-1])
        if parent is not None and steps[-1] < len(parent["items"]):
            parent["items"].pop(steps[-1])
        return rules
    target = _walk(rules, steps)
    if target is None:
        return rules
    if verb == "add_condition":
        target["items"].append({"field": "province", "operator": "eq", "value": ""})
    elif verb == "add_group":
        target["items"].append({"op": "or", "items": [{"field": "tag", "operator": "has", "value": ""}]})
    return rules


def _walk(node: dict[str, Any], steps: list[int]) -> dict[str, Any] | None:
    for step in steps:
        items = node.get("items", [])
        if step >= len(items) or "items" not in items[step]:
            return None
        node = items[step]
    return node
