"""Forms of the reports pages: cost entries and monthly schedules."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, DecimalField, IntegerField, SelectField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, NumberRange, Optional


class CostForm(FlaskForm):
    spent_on = DateField(_l("Date"), validators=[DataRequired()])
    cost = DecimalField(_l("Cost (¥)"), places=2, validators=[Optional(), NumberRange(min=0)])
    revenue = DecimalField(
        _l("Revenue not tracked by purchases (¥)"), places=2, validators=[Optional(), NumberRange(min=0)]
    )
    note = StringField(_l("Note"), validators=[Optional(), Length(max=500)])


class ScheduleForm(FlaskForm):
    name = StringField(_l("Name"), validators=[Optional(), Length(max=200)])
    kind = SelectField(
        _l("Report"),
        choices=[
            SelectChoice("campaign_pdf", _l("PDF report")),
            SelectChoice("campaign_xlsx", _l("Excel workbook")),
            SelectChoice("backup_zip", _l("Data backup (CSV files)")),
        ],
    )
    campaign_ids = SelectMultipleField(_l("Campaigns"), coerce=int, choices=[], validate_choice=False)
    day_of_month = IntegerField(_l("Day of the month"), default=1, validators=[NumberRange(min=1, max=28)])
    conversion_kind = SelectField(_l("Conversion event"), choices=[])
    conversion_days = IntegerField(_l("Conversion window (days)"), default=30, validators=[NumberRange(min=1, max=365)])
