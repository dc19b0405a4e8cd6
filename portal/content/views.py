"""The content library: list, editor with live preview, review, word and link lists."""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, current_app, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from portal import labels, storage
from portal.access import Permission, public, require, require_any
from portal.auth.models import User
from portal.content import blocks, lint, media, service
from portal.content.forms import (
    DecisionForm,
    DraftForm,
    LinkRuleForm,
    MediaUploadForm,
    NewAssetForm,
    TemplateForm,
    WordForm,
)
from portal.content.models import VersionStatus
from portal.delivery.channels.wecom import MAX_BYTES as WECOM_MAX_BYTES
from portal.delivery.render import RenderLimitExceeded, TemplateRefused, sample_variables
from portal.extensions import db
from portal.htmx import is_htmx, page_or_fragment, redirect_after_post

bp = Blueprint("content", __name__)
# Media files are fetched by mail clients: no sign-in, no /content prefix.
media_bp = Blueprint("media", __name__)
IMMUTABLE = "public, max-age=31536000, immutable"

STATUS_LABELS = {
    VersionStatus.DRAFT: _l("Draft"),
    VersionStatus.IN_REVIEW: _l("In review"),
    VersionStatus.RETURNED: _l("Changes requested"),
    VersionStatus.APPROVED: _l("Approved"),
    VersionStatus.SUPERSEDED: _l("Superseded"),
}
KIND_LABELS = {"email": _l("Email"), "sms": _l("SMS"), "wecom": _l("WeCom message")}
FINDING_LABELS = {
    "forbidden_word": _l("Forbidden wording"),
    "link_scheme": _l("Only http and https links are allowed"),
    "link_no_address": _l("A link has no address yet"),
    "link_ip": _l("Links must use a domain name, not a raw IP address"),
    "link_shortener": _l("URL shorteners hide the destination"),
    "link_denied": _l("The domain is on the deny list"),
    "link_not_allowed": _l("The domain is not on the allow list"),
    "subject_missing": _l("An email needs a subject"),
    "subject_long": _l("The subject is long; phones show about 40 characters"),
    "unsubscribe_missing": _l("A marketing email must contain the unsubscribe link {{ unsubscribe_url }}"),
    "image_alt": _l("An image has no alt text"),
    "sms_opt_out_missing": _l("An SMS must contain the opt-out text"),
}
# What a refused action says, by the service's code.
CONTENT_ERRORS = {
    "may_not_edit": _l("You may not edit content."),
    "unknown_kind": _l("Unknown content kind."),
    "name_missing": _l("Give the content a name."),
    "not_a_draft": _l("Only a draft can be changed or submitted; start a new version to change it."),
    "not_in_review": _l("This version is not waiting for review."),
    "only_author_withdraws": _l("Only the author can withdraw a version from review."),
    "contributor_cannot_approve": _l(
        "You wrote part of version %(version)s, so you cannot approve it; another reviewer must."
    ),
    "changes_comment_missing": _l("Say what needs to change."),
    "may_not_comment": _l("You may not comment on content."),
    "comment_missing": _l("Write a comment first."),
    "may_not_review": _l("You may not review content."),
    "no_such_version": _l("No such version."),
    "no_such_content": _l("No such content."),
    "not_approved": _l("Only approved content can be sent."),
    "checks_failed": _l("Blocking problems must be fixed before review."),
    "word_invalid": _l("Give a word and whether it blocks or warns."),
    "word_exists": _l("“%(word)s” is on the list already."),
    "no_such_word": _l("No such word."),
    "link_rule_invalid": _l("Give a domain name (example.com) and a list."),
    "no_such_rule": _l("No such rule."),
    "no_such_template": _l("No such template."),
    "blocks_invalid": _l("The blocks could not be read; reload the editor."),
    "image_too_large": _l("The image is larger than %(limit_mb)s MB."),
    "image_svg_refused": _l("SVG images are not accepted: mail clients block them and they can carry scripts."),
    "image_has_payload": _l("The file carries something besides the picture (a script or another file)."),
    "image_type_refused": _l("Only PNG, JPEG, GIF and WebP images are accepted."),
    "image_too_many_pixels": _l("The image has too many pixels."),
    "image_unreadable": _l("The file is not a readable image."),
    "image_mislabelled": _l("The file is named .%(extension)s but is a %(detected)s image; rename it and try again."),
    "folder_invalid": _l("A folder name may hold letters, digits, spaces and dashes."),
    "no_such_image": _l("No such image."),
    "image_in_use": _l("The image is used by %(count)s messages or templates; remove it from them first."),
}
BLOCK_LABELS = {
    "heading": _l("Heading"),
    "text": _l("Text"),
    "image": _l("Image"),
    "button": _l("Button"),
    "divider": _l("Divider"),
    "spacer": _l("Spacer"),
    "social": _l("Social links"),
    "footer": _l("Footer"),
    "html": _l("HTML"),
}
BLOCK_CHANGE_LABELS = {
    "added": _l("Added"),
    "removed": _l("Removed"),
    "changed": _l("Edited"),
    "moved": _l("Moved"),
}
ALIGN_LABELS = {"left": _l("Left"), "center": _l("Centre"), "right": _l("Right")}
# The variable picker: what it inserts, and what the author reads.
VARIABLE_LABELS = {
    "contact.name": _l("Contact's name"),
    "contact.email": _l("Contact's email address"),
    "contact.mobile": _l("Contact's mobile"),
    "contact.company": _l("Contact's company"),
    "contact.industry": _l("Contact's industry"),
    "contact.province": _l("Contact's province"),
    "contact.city": _l("Contact's city"),
    "contact.company_size": _l("Contact's company size"),
    "campaign.name": _l("Campaign name"),
    "sender.company": _l("Sender's company"),
    "unsubscribe_url": _l("Unsubscribe link"),
    "view_in_browser_url": _l("View in browser link"),
}
# Why a template was refused at save, by the sandbox's code.
TEMPLATE_REFUSALS = {
    "syntax_error": _l("the template has a syntax error (an unclosed {{ or {%%, or a misspelt tag)"),
    "unknown_variable": _l("“%(name)s” is not one of the variables a message may use"),
    "private_attribute": _l("“%(name)s” may not be used"),
    "call_not_allowed": _l("calling functions or methods is not allowed"),
    "filter_not_allowed": _l("the filter “%(name)s” is not allowed"),
    "tag_not_allowed": _l("the tag “%(tag)s” is not allowed (messages cannot include, import or define templates)"),
    "too_deeply_nested": _l("blocks or expressions are nested more than %(limit)s levels deep"),
    "too_long": _l("the template is longer than %(limit)s characters"),
}
# Why a render was stopped, by the sandbox's code.
RENDER_LIMITS = {
    "output_too_large": _l("the message would be longer than %(limit)s characters"),
    "value_too_large": _l("a repeated or padded value would be longer than %(limit)s characters or items"),
    "number_too_large": _l("a number would be larger than %(limit)s bits"),
    "too_much_work": _l("the template's operations would produce more than %(limit)s characters in all"),
    "too_many_iterations": _l("its loops would run more than %(limit)s times"),
    "too_slow": _l("it takes longer than %(limit)s seconds to render"),
    "string_formatting": _l("formatting text with %% is not allowed"),
    "not_allowed": _l("it does something a message may not do"),
    "render_error": _l("it fails while rendering (for example a division by zero, or text used as a number)"),
}
FIELD_LABELS = labels.CONTENT_FIELDS


def content_error_message(error: service.ContentError) -> str:
    return str(CONTENT_ERRORS[error.code]) % error.params


def template_problem(error: TemplateRefused | RenderLimitExceeded) -> str:
    """The sentence for a refused or stopped template: where (field, line) and why."""
    if isinstance(error, RenderLimitExceeded):
        return _("Rendering was stopped: %(reason)s.", reason=str(RENDER_LIMITS[error.code]) % error.params)
    reason = str(TEMPLATE_REFUSALS[error.code]) % error.params
    field = str(FIELD_LABELS.get(error.field, error.field or ""))
    if error.line and field:
        return _("%(field)s, line %(line)s: %(reason)s.", field=field, line=error.line, reason=reason)
    if field:
        return _("%(field)s: %(reason)s.", field=field, reason=reason)
    return _("%(reason)s.", reason=reason)


THREAD_LABELS = {
    "submitted": _l("submitted for review"),
    "approved": _l("approved"),
    "changes_requested": _l("requested changes"),
    "withdrawn": _l("withdrew it from review"),
    "comment": _l("commented"),
}


@bp.app_context_processor
def content_labels():
    return {
        "content_status_label": lambda s: STATUS_LABELS.get(s, s),
        "content_kind_label": lambda k: KIND_LABELS.get(k, k),
        "finding_label": lambda f: FINDING_LABELS.get(f["code"], f["code"]),
        "thread_label": lambda k: THREAD_LABELS.get(k, k),
        "highlight": service.highlight,
        "content_field_label": lambda name: FIELD_LABELS.get(name, name),
        "content_shown_version": lambda asset: asset.latest if _sees_drafts() else asset.approved,
        "block_label": lambda kind: BLOCK_LABELS.get(kind, kind),
        "block_change_label": lambda change: BLOCK_CHANGE_LABELS.get(change, change),
    }


def _sees_drafts() -> bool:
    return current_user.can(Permission.CONTENT_EDIT) or current_user.can(Permission.CONTENT_REVIEW)


def _actor() -> User:
    return current_user._get_current_object()


def _tags(raw: str | None) -> list[str]:
    return [t for t in (raw or "").replace("，", ",").split(",") if t.strip()]


@bp.get("/")
@require(Permission.CONTENT_VIEW)
def index():
    args = request.args
    page = service.search_assets(
        _actor(),
        text=args.get("q", ""),
        kind=args.get("kind", ""),
        status=args.get("status", ""),
        owner_id=args.get("owner", type=int),
        tag=args.get("tag", ""),
        page=args.get("page", 1, type=int),
    )
    return page_or_fragment(
        "content/index.html", "content/_list.html", page=page, args=args, statuses=STATUS_LABELS, kinds=KIND_LABELS
    )


@bp.route("/new", methods=["GET", "POST"])
@require(Permission.CONTENT_EDIT)
def new():
    form = NewAssetForm()
    form.start_from.choices = _start_choices()
    if not form.is_submitted():
        form.start_from.data = request.args.get("start_from", "blocks")
    if form.validate_on_submit():
        try:
            asset = service.create_asset(
                _actor(), form.kind.data, form.name.data, _tags(form.tags.data), form.start_from.data or ""
            )
        except service.ContentError as exc:
            db.session.rollback()
            form.start_from.errors = [content_error_message(exc)]
        else:
            return redirect_after_post(url_for("content.edit", version_id=asset.latest.id))
    return render_template("content/new.html", form=form), 422 if form.is_submitted() else 200


def _start_choices() -> dict:
    """A blank message, the templates of each kind, and recent messages, as option groups."""
    groups: dict = {"": [("blocks", _("A new message (emails: in the block editor)")), ("", _("An empty message"))]}
    for kind, label in KIND_LABELS.items():
        options = service.templates_for(kind)
        if options:
            groups[_("Templates: %(kind)s", kind=label)] = options
    recent = service.search_assets(_actor(), per_page=30).items
    if recent:
        groups[_("A previous message")] = [
            (f"asset:{a.id}", f"{a.name}（{KIND_LABELS.get(a.kind, a.kind)}）") for a in recent
        ]
    return groups


@bp.get("/<int:asset_id>")
@require(Permission.CONTENT_VIEW)
def show(asset_id: int):
    try:
        asset = service.visible_asset(_actor(), asset_id)
    except service.ContentError:
        abort(404)
    versions = service.visible_versions(_actor(), asset)
    version = versions[-1]
    chosen = request.args.get("version", type=int)
    if chosen:
        version = next((v for v in versions if v.id == chosen), version)
    return render_template(
        "content/show.html",
        asset=asset,
        versions=versions,
        version=version,
        preview=_preview(version, "zh"),
        changes=service.review_changes(version) if version.status == VersionStatus.IN_REVIEW else None,
        contributors=service.contributor_ids(version),
        comment_form=DecisionForm(),
        links=lint.links_in(asset.kind, version.fields()),
    )


def _preview(version_or_fields, sample: str, kind: str | None = None, document: dict | None = None) -> dict:
    """Render a version (or unsaved fields) as a sample contact, or as a real one ("contact:<id>"),
    with the automatic checks as they stand; errors are shown, not raised."""
    fields = version_or_fields if isinstance(version_or_fields, dict) else version_or_fields.fields()
    kind = kind or version_or_fields.asset.kind
    result: dict = {"kind": kind, "error": None}
    result["findings"] = [f.as_dict() for f in service.check_fields(kind, fields, document)]
    try:
        compiled = service.compile_version(fields, kind)
        variables = sample_variables(sample)
        if sample.startswith("contact:") and sample[8:].isdigit() and current_user.can(Permission.AUDIENCE_VIEW):
            variables = service.preview_variables_for_contact(int(sample[8:])) or variables
        result["rendered"] = {name: template.render(variables) for name, template in compiled.items()}
    except (TemplateRefused, RenderLimitExceeded) as exc:
        result["error"] = template_problem(exc)
        return result
    if kind == "sms":
        result["sms"] = lint.sms_cost(_as_sent(result["rendered"]["sms_text"]))
    elif kind == "wecom":
        result["wecom_bytes"] = len(result["rendered"]["wecom_text"].encode())
        wecom_format = getattr(version_or_fields, "wecom_format", None) or request.form.get("wecom_format", "text")
        result["wecom_limit"] = WECOM_MAX_BYTES.get(wecom_format, WECOM_MAX_BYTES["text"])
    return result


def _as_sent(sms_text: str) -> str:
    """The SMS as the phone shows it: the gateway puts the signature 【…】 in front."""
    sign = current_app.config["SMS_SIGN_NAME"]
    return f"【{sign}】{sms_text}" if sign else sms_text


@bp.route("/versions/<int:version_id>/edit", methods=["GET", "POST"])
@require(Permission.CONTENT_EDIT)
def edit(version_id: int):
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    if not version.editable:
        flash(_("This version is not a draft; start a new version to change it."), "warning")
        return redirect_after_post(url_for("content.show", asset_id=version.asset_id))
    form = DraftForm(obj=version)
    if request.method == "GET":
        form.name.data = version.asset.name
        form.tags.data = ", ".join(version.asset.tags or [])
    findings = None
    if form.validate_on_submit():
        values = {
            **request.form.to_dict(),
            "tags": _tags(form.tags.data),
            "text_written_by_hand": form.text_written_by_hand.data,
        }
        try:
            values["blocks"] = _posted_document(version)
            if request.form.get("action") == "to_html" and values["blocks"] is not None:
                values["html_body"] = blocks.render_html(values.pop("blocks"), form.preheader.data or "")
            elif request.form.get("action") == "to_blocks":
                values["blocks"] = blocks.document_from_html(service.sanitise_html(values.get("html_body", "")))
            service.save_draft(_actor(), version.id, values)
        except TemplateRefused as exc:
            # Nothing of the refused save may reach the database while the page is rendered.
            db.session.rollback()
            flash(_("Not saved: %(error)s", error=template_problem(exc)), "error")
            # The preview shows what was typed (and why it cannot be rendered), not the last save.
            # The blocks stay as the author left them, so nothing typed is lost.
            return _edit_page(
                form,
                version,
                findings,
                422,
                _preview(_unsaved_fields(version), "zh", version.asset.kind),
                document=values.get("blocks", version.blocks),
            )
        except service.ContentError as exc:
            db.session.rollback()
            flash(content_error_message(exc), "error")
            return redirect_after_post(url_for("content.show", asset_id=version.asset_id))
        if request.form.get("action") == "submit":
            try:
                service.submit_for_review(_actor(), version.id)
            except service.ChecksFailed as failed:
                db.session.rollback()
                flash(_("Saved, but not submitted: fix the blocking problems first."), "error")
                findings = [f.as_dict() for f in failed.findings]
                return _edit_page(form, version, findings, 422)
            except service.ContentError as exc:
                db.session.rollback()
                flash(content_error_message(exc), "error")
                return redirect_after_post(url_for("content.show", asset_id=version.asset_id))
            flash(_("Submitted for review."), "success")
            return redirect_after_post(url_for("content.show", asset_id=version.asset_id))
        flash(_("Draft saved."), "success")
        return redirect_after_post(url_for("content.edit", version_id=version.id))
    return _edit_page(form, version, findings, 422 if form.is_submitted() else 200)


def _posted_document(version) -> dict | None:
    """The block document the editor posted; None when the message is written as HTML (or
    the author switched to HTML, which keeps the rendered HTML to edit by hand)."""
    if version.asset.kind != "email" or request.form.get("mode") != "blocks":
        return None
    try:
        return blocks.document_from_form(request.form)
    except blocks.BlocksRefused as exc:
        raise service.ContentError("blocks_invalid") from exc


def _edit_page(form: DraftForm, version, findings: list | None, status: int, preview: dict | None = None, **extra):
    document = extra.pop("document", version.blocks)
    return render_template(
        "content/edit.html",
        form=form,
        version=version,
        findings=findings,
        preview=preview or _preview(version, "zh", document=version.blocks),
        texts=service.check_texts(version),
        contact_choices=_contact_choices(),
        **_block_editor_context(version, document, extra.pop("undo", None)),
        template_form=TemplateForm(),
        **extra,
    ), status


def _variable_expression(name: str) -> str:
    """What the picker inserts: contact fields with a fallback for contacts who lack them."""
    if not name.startswith("contact."):
        return f"{{{{ {name} }}}}"
    fallback = _("Customer") if name == "contact.name" else ""
    return f'{{{{ {name} | default("{fallback}") }}}}'


def _block_editor_context(version, document: dict | None, undo: dict | None) -> dict:
    return {
        "document": document,
        "undo_json": json.dumps(undo, ensure_ascii=False) if undo else "",
        "block_kinds": blocks.BLOCK_KINDS,
        "align_labels": ALIGN_LABELS,
        "library": media.search_images() if document is not None else [],
        "public_url": media.public_url,
        "variable_choices": [(_variable_expression(name), label) for name, label in VARIABLE_LABELS.items()],
        "blocks_url": url_for("content.edit_blocks", version_id=version.id),
    }


@bp.post("/versions/<int:version_id>/blocks")
@require(Permission.CONTENT_EDIT)
def edit_blocks(version_id: int):
    """One step in the block editor (add, duplicate, delete, move a section, undo), applied to
    the unsaved document the form holds; nothing is saved until the author saves."""
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    if not version.editable:
        abort(409)
    operation = request.form.get("op", "")
    try:
        current = blocks.document_from_form(request.form)
        if operation == "undo":
            document = blocks.clean_document(json.loads(request.form.get("undo_document") or "null") or current)
        else:
            # add:<section>:<column> takes the kind from that column's own picker
            picker = "add." + operation.removeprefix("add:").replace(":", ".")
            document = blocks.apply_operation(current, operation, request.form.get(picker, "text"))
    except (blocks.BlocksRefused, ValueError):
        return Response(_("The blocks could not be read; reload the editor."), 422)
    context = _block_editor_context(version, document, current if operation != "undo" else None)
    if is_htmx():
        return render_template("content/_blocks.html", version=version, **context)
    form = DraftForm(formdata=request.form)
    page, status = _edit_page(form, version, None, 200, document=document, undo=current)
    return page, status


def _contact_choices() -> list:
    """A few real contacts to preview as (people who may see contacts only)."""
    if not current_user.can(Permission.AUDIENCE_VIEW):
        return []
    return service.recent_contacts_for_preview()


def _unsaved_fields(version) -> dict[str, str]:
    """The version's fields as the editor's form has them, as a save would clean them."""
    fields = version.fields()
    for name in fields:
        if name in request.form:
            fields[name] = request.form[name]
    if version.asset.kind == "email":
        document = _posted_document(version)
        if document is not None:
            fields["html_body"] = blocks.render_html(document, fields["preheader"])
            generated = blocks.render_text(document)
        else:
            fields["html_body"] = service.sanitise_html(fields["html_body"])
            generated = service.text_from_html(fields["html_body"])
        if not request.form.get("text_written_by_hand"):
            fields["text_body"] = generated
    return fields


@bp.post("/versions/<int:version_id>/preview")
@require(Permission.CONTENT_EDIT)
def live_preview(version_id: int):
    """The editor posts its unsaved fields here as the author types (debounced)."""
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    sample = request.form.get("sample", "zh")
    try:
        fields = _unsaved_fields(version)
        document = _posted_document(version)
    except service.ContentError as exc:
        return Response(content_error_message(exc), 422)
    return render_template(
        "content/_preview.html",
        preview=_preview(fields, sample, version.asset.kind, document=document),
        sample=sample,
        live_url=url_for("content.live_preview", version_id=version.id),
        contact_choices=_contact_choices(),
    )


@bp.post("/<int:asset_id>/new-version")
@require(Permission.CONTENT_EDIT)
def new_version(asset_id: int):
    try:
        draft = service.new_draft_from(_actor(), asset_id)
    except service.ContentError as exc:
        db.session.rollback()
        flash(content_error_message(exc), "error")
        return redirect_after_post(url_for("content.index"))
    return redirect_after_post(url_for("content.edit", version_id=draft.id))


def _decide(version_id: int, action) -> object:
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    try:
        action(version)
    except service.ContentError as exc:
        db.session.rollback()
        flash(content_error_message(exc), "error")
    return redirect_after_post(url_for("content.show", asset_id=version.asset_id, version=version.id))


@bp.post("/versions/<int:version_id>/withdraw")
@require(Permission.CONTENT_EDIT)
def withdraw(version_id: int):
    return _decide(version_id, lambda v: service.withdraw(_actor(), v.id))


@bp.post("/versions/<int:version_id>/approve")
@require(Permission.CONTENT_REVIEW)
def approve(version_id: int):
    def act(v):
        service.approve(_actor(), v.id, request.form.get("comment", ""))
        flash(_("Approved."), "success")

    return _decide(version_id, act)


@bp.post("/versions/<int:version_id>/request-changes")
@require(Permission.CONTENT_REVIEW)
def request_changes(version_id: int):
    def act(v):
        service.request_changes(_actor(), v.id, request.form.get("comment", ""))
        flash(_("Changes requested; the author has been told."), "success")

    return _decide(version_id, act)


@bp.post("/versions/<int:version_id>/comments")
@require_any(Permission.CONTENT_EDIT, Permission.CONTENT_REVIEW)
def comment(version_id: int):
    return _decide(version_id, lambda v: service.add_comment(_actor(), v.id, request.form.get("comment", "")))


@bp.get("/review")
@require(Permission.CONTENT_REVIEW)
def review_queue():
    return render_template("content/review_queue.html", queue=service.review_queue(), counts=service.queue_counts())


@bp.route("/settings", methods=["GET", "POST"])
@require(Permission.SETTINGS_MANAGE)
def settings():
    word_form, link_form = WordForm(prefix="word"), LinkRuleForm(prefix="link")
    try:
        if request.method == "POST" and request.form.get("remove_word"):
            service.remove_word(_actor(), int(request.form["remove_word"]))
        elif request.method == "POST" and request.form.get("remove_link"):
            service.remove_link_rule(_actor(), int(request.form["remove_link"]))
        elif "word-word" in request.form and word_form.validate_on_submit():
            service.add_word(_actor(), word_form.word.data, word_form.severity.data)
        elif "link-domain" in request.form and link_form.validate_on_submit():
            service.add_link_rule(_actor(), link_form.kind.data, link_form.domain.data)
        elif request.method == "POST":
            flash(_("Check the form."), "error")
        if request.method == "POST":
            return redirect_after_post(url_for("content.settings"))
    except service.ContentError as exc:
        db.session.rollback()
        flash(content_error_message(exc), "error")
    except ValueError:
        db.session.rollback()
        flash(_("Check the form."), "error")
    return render_template(
        "content/settings.html",
        words=service.list_words(),
        rules=service.list_link_rules(),
        word_form=word_form,
        link_form=link_form,
    )


@bp.post("/versions/<int:version_id>/save-as-template")
@require(Permission.CONTENT_EDIT)
def save_as_template(version_id: int):
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    form = TemplateForm()
    if not form.validate_on_submit():
        flash(_("Give the template a name."), "error")
    else:
        try:
            service.save_as_template(_actor(), version.id, form.name.data)
            flash(_("Saved as the template “%(name)s”.", name=form.name.data.strip()), "success")
        except service.ContentError as exc:
            db.session.rollback()
            flash(content_error_message(exc), "error")
    if version.editable:
        return redirect_after_post(url_for("content.edit", version_id=version.id))
    return redirect_after_post(url_for("content.show", asset_id=version.asset_id, version=version.id))


# --- media library -------------------------------------------------------------------------------


@bp.route("/media", methods=["GET", "POST"])
@require(Permission.CONTENT_VIEW)
def media_library():
    form = MediaUploadForm()
    status = 200
    if request.method == "POST":
        if not current_user.can(Permission.CONTENT_EDIT):
            abort(403)
        if form.validate_on_submit():
            upload = form.image.data
            try:
                image = media.upload_image(
                    _actor(), upload.filename or "", upload.stream, form.folder.data or "", _tags(form.tags.data)
                )
            except service.ContentError as exc:
                db.session.rollback()
                form.image.errors = [content_error_message(exc)]
                status = 422
            else:
                flash(_("Uploaded “%(name)s”.", name=image.original_name), "success")
                return redirect_after_post(url_for("content.media_library", folder=image.folder or None))
        else:
            status = 422
    args = request.args
    images = media.search_images(args.get("q", ""), args.get("folder", ""), args.get("tag", ""))
    return render_template(
        "content/media.html",
        form=form,
        images=images,
        folders=media.folders(),
        args=args,
        public_url=media.public_url,
        where_used={image.id: media.where_used(image) for image in images},
    ), status


@bp.post("/media/<int:image_id>/delete")
@require(Permission.CONTENT_EDIT)
def media_delete(image_id: int):
    try:
        media.delete_image(_actor(), image_id)
        flash(_("Image deleted."), "success")
    except service.ContentError as exc:
        db.session.rollback()
        flash(content_error_message(exc), "error")
    return redirect_after_post(url_for("content.media_library"))


@media_bp.get("/m/<file_name>")
@public
def media_file(file_name: str):
    """An image as mail clients fetch it: no session, cached for a year (the name is its hash)."""
    image = media.image_by_file_name(file_name)
    if image is None:
        abort(404)
    try:
        chunks = storage.open_stream(media.AREA, file_name)
    except (FileNotFoundError, ValueError):
        abort(404)
    response = Response(chunks, mimetype=image.content_type)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
