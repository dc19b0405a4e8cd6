from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget


class CheckboxesField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class UserRolesForm(FlaskForm):
    roles = CheckboxesField(_l("Roles given in the portal"), choices=[])


class RoleForm(FlaskForm):
    name = StringField(_l("Name (letters, digits, underscores)"), validators=[DataRequired(), Length(max=64)])
    label = StringField(_l("Label"), validators=[DataRequired(), Length(max=128)])
    permissions = CheckboxesField(_l("Permissions"), choices=[])


class MappingForm(FlaskForm):
    group_name = StringField(_l("Identity-provider group"), validators=[DataRequired(), Length(max=255)])
    role = SelectField(_l("Role"), choices=[], validators=[DataRequired()])
