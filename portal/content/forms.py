from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

KIND_CHOICES = [
    SelectChoice("email", _l("Email")),
    SelectChoice("sms", _l("SMS")),
    SelectChoice("wecom", _l("WeCom message")),
]


class NewAssetForm(FlaskForm):
    kind = RadioField(_l("Kind"), choices=KIND_CHOICES, default="email", validators=[DataRequired()])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    tags = StringField(_l("Tags (comma separated)"), validators=[Optional(), Length(max=300)])
    # Choices are set by the view: templates and previous messages.
    start_from = SelectField(_l("Start from"), choices=[], validate_choice=False)


class TemplateForm(FlaskForm):
    name = StringField(_l("Template name"), validators=[DataRequired(), Length(max=200)])


class MediaUploadForm(FlaskForm):
    image = FileField(_l("Image"), validators=[FileRequired()])
    folder = StringField(_l("Folder"), validators=[Optional(), Length(max=100)])
    tags = StringField(_l("Tags (comma separated)"), validators=[Optional(), Length(max=300)])


class DraftForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    tags = StringField(_l("Tags (comma separated)"), validators=[Optional(), Length(max=300)])
    subject = StringField(_l("Subject"), validators=[Optional(), Length(max=300)])
    preheader = StringField(_l("Preheader"), validators=[Optional(), Length(max=300)])
    html_body = TextAreaField(_l("HTML body"), validators=[Optional()])
    text_written_by_hand = BooleanField(_l("Write the plain-text part by hand"))
    text_body = TextAreaField(_l("Plain-text body"), validators=[Optional()])
    sms_text = TextAreaField(_l("SMS text"), validators=[Optional()])
    wecom_format = SelectField(
        _l("Format"), choices=[SelectChoice("text", _l("Text")), SelectChoice("markdown", "Markdown")]
    )
    wecom_text = TextAreaField(_l("Message"), validators=[Optional()])


class DecisionForm(FlaskForm):
    comment = TextAreaField(_l("Comment"), validators=[Optional(), Length(max=4000)])


class WordForm(FlaskForm):
    word = StringField(_l("Word or phrase"), validators=[DataRequired(), Length(max=100)])
    severity = SelectField(
        _l("Effect"),
        choices=[SelectChoice("blocking", _l("Blocks submission")), SelectChoice("warning", _l("Warning"))],
    )


class LinkRuleForm(FlaskForm):
    domain = StringField(_l("Domain"), validators=[DataRequired(), Length(max=200)])
    kind = SelectField(
        _l("List"),
        choices=[
            SelectChoice("deny", _l("Deny")),
            SelectChoice("allow", _l("Allow")),
            SelectChoice("shortener", _l("URL shortener")),
        ],
    )
