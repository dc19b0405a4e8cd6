"""The content library: list, editor with live preview, review, word and link lists."""

from __future__ import annotations

from flask import Blueprint, abort, flash, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from portal.access import Permission, require, require_any
from portal.auth.models import User
from portal.content import lint, service
from portal.content.forms import CommentForm, DecisionForm, DraftForm, LinkRuleForm, NewAssetForm, WordForm
from portal.content.models import VersionStatus
from portal.delivery.render import RenderLimitExceeded, TemplateRefused, sample_variables
from portal.extensions import db
from portal.htmx import page_or_fragment, redirect_after_post

bp = Blueprint("content", __name__)

STATUS_LABELS = {
    VersionStatus.DRAFT: _l("Draft"),
    VersionStatus.IN_REVIEW: _l("In review"),
    VersionStatus.APPROVED: _l("Approved"),
    VersionStatus.SUPERSEDED: _l("Superseded"),
}
KIND_LABELS = {"email": _l("Email"), "sms": _l("SMS"), "wecom": _l("WeCom message")}
FINDING_LABELS = {
    "forbidden_word": _l("Forbidden wording"),
    "link_scheme": _l("Only http and https links are allowed"),
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
    }


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
    if form.validate_on_submit():
        asset = service.create_asset(_actor(), form.kind.data, form.name.data, _tags(form.tags.data))
        return redirect_after_post(url_for("content.edit", version_id=asset.latest.id))
    return render_template("content/new.html", form=form), 422 if form.is_submitted() else 200


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
        diff=service.diff_against_approved(version) if version.status == VersionStatus.IN_REVIEW else None,
        decision_form=DecisionForm(),
        comment_form=CommentForm(),
        links=lint.links_in(asset.kind, version.fields()),
    )


def _preview(version_or_fields, sample: str, kind: str | None = None) -> dict:
    """Render a version (or unsaved fields) as a sample contact, or as a real one ("contact:<id>");
    errors are shown, not raised."""
    fields = version_or_fields if isinstance(version_or_fields, dict) else version_or_fields.fields()
    kind = kind or version_or_fields.asset.kind
    result: dict = {"kind": kind, "error": None}
    try:
        compiled = service.compile_version(fields, kind)
        variables = sample_variables(sample)
        if sample.startswith("contact:") and sample[8:].isdigit() and current_user.can(Permission.AUDIENCE_VIEW):
            variables = service.preview_variables_for_contact(int(sample[8:])) or variables
        result["rendered"] = {name: template.render(variables) for name, template in compiled.items()}
    except (TemplateRefused, RenderLimitExceeded) as exc:
        result["error"] = str(exc)
        return result
    if kind == "sms":
        result["sms"] = lint.sms_cost(result["rendered"]["sms_text"])
    return result


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
            service.save_draft(_actor(), version.id, values)
        except TemplateRefused as exc:
            form.errors.setdefault("template", []).append(str(exc))
            flash(_("Not saved: %(error)s", error=str(exc)), "error")
            return _edit_page(form, version, findings, 422)
        if request.form.get("action") == "submit":
            try:
                service.submit_for_review(_actor(), version.id)
            except service.ChecksFailed as failed:
                flash(_("Saved, but not submitted: fix the blocking problems first."), "error")
                findings = [f.as_dict() for f in failed.findings]
                return _edit_page(form, version, findings, 422)
            flash(_("Submitted for review."), "success")
            return redirect_after_post(url_for("content.show", asset_id=version.asset_id))
        flash(_("Draft saved."), "success")
        return redirect_after_post(url_for("content.edit", version_id=version.id))
    return _edit_page(form, version, findings, 422 if form.is_submitted() else 200)


def _edit_page(form: DraftForm, version, findings: list | None, status: int):
    return render_template(
        "content/edit.html",
        form=form,
        version=version,
        findings=findings,
        preview=_preview(version, "zh"),
        texts=service.check_texts(version),
        contact_choices=_contact_choices(),
    ), status


def _contact_choices() -> list:
    """A few real contacts to preview as (people who may see contacts only)."""
    if not current_user.can(Permission.AUDIENCE_VIEW):
        return []
    return service.recent_contacts_for_preview()


@bp.post("/versions/<int:version_id>/preview")
@require(Permission.CONTENT_EDIT)
def live_preview(version_id: int):
    """The editor posts its unsaved fields here as the author types (debounced)."""
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    fields = version.fields()
    for name in fields:
        if name in request.form:
            fields[name] = request.form[name]
    if version.asset.kind == "email":
        fields["html_body"] = service.sanitise_html(fields["html_body"])
        if not request.form.get("text_written_by_hand"):
            fields["text_body"] = service.text_from_html(fields["html_body"])
    sample = request.form.get("sample", "zh")
    return render_template(
        "content/_preview.html",
        preview=_preview(fields, sample, version.asset.kind),
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
        flash(str(exc), "error")
        return redirect_after_post(url_for("content.index"))
    return redirect_after_post(url_for("content.edit", version_id=draft.id))


def _decide(version_id: int, action) -> object:
    version = db.session.get(service.AssetVersion, version_id) or abort(404)
    try:
        action(version)
    except service.ContentError as exc:
        flash(str(exc), "error")
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
    return _decide(version_id, lambda v: service.add_comment(_actor(), v.id, request.form.get("body", "")))


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
    except (service.ContentError, ValueError) as exc:
        flash(str(exc), "error")
    return render_template(
        "content/settings.html",
        words=service.list_words(),
        rules=service.list_link_rules(),
        word_form=word_form,
        link_form=link_form,
    )
