"""Audience pages: contacts, import, segments, tags and tag rules, scoring, privacy, API tokens."""

from __future__ import annotations

import json

from flask import Blueprint, Response, abort, flash, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from portal import settings
from portal.access import Permission, require, session_signed_in_at
from portal.audience import api, export, forms, importing, privacy, scoring, segments, service, tag_rules
from portal.audience.models import EventKind, ImportJob, LifecycleStage, Segment
from portal.extensions import db
from portal.htmx import page_or_fragment, redirect_after_post
from portal.queue import JobRun, enqueue

bp = Blueprint("audience", __name__)

FIELD_LABELS = {
    "province": _l("Province"),
    "region": _l("Region"),
    "city": _l("City"),
    "industry": _l("Industry"),
    "company": _l("Company"),
    "company_size": _l("Company size"),
    "name": _l("Name"),
    "email": _l("Email"),
    "mobile": _l("Mobile"),
    "tag": _l("Tag"),
    "score": _l("Score"),
    "lifecycle_stage": _l("Lifecycle stage"),
    "consent.email": _l("Email consent"),
    "consent.sms": _l("SMS consent"),
    "unsubscribed": _l("Unsubscribed"),
    "created_days": _l("Created (days ago)"),
    "last_activity_days": _l("Last activity (days ago)"),
    **{
        f"event.{k}": _l("Event: %(kind)s", kind=k)
        for k in (
            "purchase",
            "email_open",
            "email_click",
            "form_submit",
            "download",
            "webinar_attended",
            "sales_consultation",
            "page_view",
        )
    },
}
OPERATOR_LABELS = {
    "eq": "=",
    "ne": "≠",
    "contains": _l("contains"),
    "in": _l("one of"),
    "empty": _l("is empty"),
    "not_empty": _l("is not empty"),
    "gte": "≥",
    "lte": "≤",
    "between": _l("between"),
    "has": _l("has"),
    "has_not": _l("has not"),
}
STAGE_LABELS = {"new": _l("New"), "growing": _l("Growing"), "stable": _l("Stable"), "dormant": _l("Dormant")}


@bp.app_context_processor
def audience_labels():
    return {
        "stage_label": lambda s: STAGE_LABELS.get(s, s),
        "segment_fields": FIELD_LABELS,
        "segment_operators": OPERATOR_LABELS,
    }


def _actor():
    return current_user._get_current_object()


# --- contacts --------------------------------------------------------------------------------


@bp.get("/contacts")
@require(Permission.AUDIENCE_VIEW)
def contacts():
    args = request.args
    page = service.search_contacts(
        args.get("q", ""),
        args.get("province", ""),
        args.get("industry", ""),
        args.get("stage", ""),
        args.get("tag", ""),
        args.get("page", 1, type=int),
    )
    return page_or_fragment(
        "audience/contacts.html", "audience/_contacts_table.html", page=page, args=args, stages=STAGE_LABELS
    )


@bp.route("/contacts/new", methods=["GET", "POST"])
@require(Permission.AUDIENCE_EDIT)
def new_contact():
    form = forms.ContactForm()
    if form.validate_on_submit():
        values = {
            k: getattr(form, k).data
            for k in ("email", "mobile", "name", "company", "industry", "province", "city", "company_size")
        }
        try:
            contact = service.create_contact(
                _actor(), {**values, "owner_id": current_user.id}, {"email": form.consent_email.data}, source="manual"
            )
        except service.AudienceError as exc:
            form.email.errors = [str(exc)]
        else:
            return redirect_after_post(url_for("audience.contact", contact_id=contact.id))
    return render_template("audience/contact_form.html", form=form), 422 if form.is_submitted() else 200


@bp.get("/contacts/<int:contact_id>")
@require(Permission.AUDIENCE_VIEW)
def contact(contact_id: int):
    try:
        profile = service.contact_profile(contact_id)
    except service.AudienceError:
        abort(404)
    return render_template("audience/contact.html", **profile, mql=settings.get("scoring.mql_threshold"))


@bp.post("/contacts/<int:contact_id>/tags")
@require(Permission.AUDIENCE_EDIT)
def add_tag(contact_id: int):
    name = request.form.get("tag", "").strip()
    if name:
        service.add_tag(_actor(), contact_id, name)
    return redirect_after_post(url_for("audience.contact", contact_id=contact_id))


@bp.post("/contacts/<int:contact_id>/tags/<int:tag_id>/delete")
@require(Permission.AUDIENCE_EDIT)
def remove_tag(contact_id: int, tag_id: int):
    service.remove_tag(_actor(), contact_id, tag_id)
    return redirect_after_post(url_for("audience.contact", contact_id=contact_id))


@bp.get("/contacts/<int:contact_id>/privacy-export")
@require(Permission.PRIVACY_REQUESTS)
def privacy_export(contact_id: int):
    data = privacy.export_person(_actor(), contact_id, session_signed_in_at())
    return Response(
        json.dumps(data, ensure_ascii=False, indent=2),
        mimetype="application/json",
        headers={"Content-Disposition": f"attachment; filename=contact-{contact_id}.json"},
    )


@bp.post("/contacts/<int:contact_id>/erase")
@require(Permission.PRIVACY_REQUESTS)
def erase(contact_id: int):
    privacy.erase_person(_actor(), contact_id, session_signed_in_at())
    flash(_("The person's data has been erased; their addresses stay on the suppression list."), "success")
    return redirect_after_post(url_for("audience.contact", contact_id=contact_id))


# --- import ----------------------------------------------------------------------------------


@bp.route("/imports", methods=["GET", "POST"])
@require(Permission.AUDIENCE_IMPORT)
def imports():
    form = forms.UploadForm()
    if form.validate_on_submit():
        upload = form.file.data
        try:
            job = importing.save_upload(_actor(), upload.filename or "upload.csv", upload.stream)
        except importing.ImportRefused as exc:
            form.file.errors = [str(exc)]
        else:
            return redirect_after_post(url_for("audience.import_mapping", import_id=job.id))
    return render_template("audience/imports.html", form=form, jobs=importing.recent_imports()), (
        422 if form.is_submitted() else 200
    )


def _import_job(import_id: int) -> ImportJob:
    return db.session.get(ImportJob, import_id) or abort(404)


@bp.route("/imports/<int:import_id>/mapping", methods=["GET", "POST"])
@require(Permission.AUDIENCE_IMPORT)
def import_mapping(import_id: int):
    job = _import_job(import_id)
    if job.status != "uploaded":
        return redirect_after_post(url_for("audience.import_result", import_id=job.id))
    preview = importing.preview(job)
    form = forms.ImportOptionsForm()
    error = None
    if form.validate_on_submit():
        mapping = {str(i): request.form.get(f"col-{i}", "") for i in range(len(preview.headers))}
        try:
            importing.confirm(_actor(), job.id, mapping, form.merge_policy.data, form.default_consent.data)
        except importing.ImportRefused as exc:
            error = str(exc)
        else:
            run = enqueue("jobs.audience.run_import", job.id, kind="import", actor=_actor(), timeout=3 * 3600)
            job.job_run_id = run.id
            db.session.commit()
            return redirect_after_post(url_for("audience.import_result", import_id=job.id))
    return render_template(
        "audience/import_mapping.html", job=job, preview=preview, form=form, error=error, fields=importing.IMPORT_FIELDS
    ), 422 if error else 200


@bp.get("/imports/<int:import_id>")
@require(Permission.AUDIENCE_IMPORT)
def import_result(import_id: int):
    job = _import_job(import_id)
    run = db.session.get(JobRun, job.job_run_id) if job.job_run_id else None
    return page_or_fragment("audience/import_result.html", "audience/_import_outcome.html", job=job, run=run)


@bp.get("/imports/<int:import_id>/rejected.csv")
@require(Permission.AUDIENCE_IMPORT)
def import_rejected(import_id: int):
    job = _import_job(import_id)
    path = importing.report_path(job)
    if job.status != "done" or not path.exists():
        abort(404)
    return send_file(path, mimetype="text/csv", as_attachment=True, download_name=f"import-{job.id}-rejected.csv")


# --- segments --------------------------------------------------------------------------------


@bp.get("/segments")
@require(Permission.AUDIENCE_VIEW)
def segment_list():
    items = list(db.session.scalars(select(Segment).order_by(Segment.name)))
    return render_template("audience/segments.html", segments=items)


def _builder_context(rules: dict, name: str = "", segment: Segment | None = None) -> dict:
    preview = {"count": None, "sample": [], "error": None}
    try:
        compiled_rules = forms.coerce_values(rules)
        preview["count"] = segments.count_segment(compiled_rules)
        preview["sample"] = segments.sample_segment(compiled_rules, 8)
    except segments.SegmentRuleError as exc:
        preview["error"] = str(exc)
    return {
        "rules": rules,
        "name": name,
        "segment": segment,
        "preview": preview,
        "regions": list(segments.REGION_GROUPS),
        "stages": [s.value for s in LifecycleStage],
        "tags": service.all_tags(),
    }


@bp.route("/segments/new", methods=["GET", "POST"])
@bp.route("/segments/<int:segment_id>", methods=["GET", "POST"])
@require(Permission.AUDIENCE_VIEW)
def segment_edit(segment_id: int | None = None):
    segment = db.session.get(Segment, segment_id) if segment_id else None
    if segment_id and segment is None:
        abort(404)
    if request.method == "POST":
        if not current_user.can(Permission.AUDIENCE_EDIT):
            abort(403)
        rules = forms.rules_from_form(request.form.to_dict())
        name = request.form.get("name", "").strip()
        try:
            coerced = forms.coerce_values(rules)
            segments.compile_rules(coerced)
            if not name:
                raise segments.SegmentRuleError(_("Name the segment."))
        except segments.SegmentRuleError as exc:
            flash(str(exc), "error")
            return render_template("audience/segment_edit.html", **_builder_context(rules, name, segment)), 422
        segment = segments.save_segment(_actor(), name, coerced, segment.id if segment else None)
        flash(_("Segment saved."), "success")
        return redirect_after_post(url_for("audience.segment_edit", segment_id=segment.id))
    rules = segment.rules if segment else {"op": "and", "items": [{"field": "province", "operator": "eq", "value": ""}]}
    return render_template(
        "audience/segment_edit.html", **_builder_context(rules, segment.name if segment else "", segment)
    )


@bp.post("/segments/builder")
@require(Permission.AUDIENCE_VIEW)
def segment_builder():
    """Add or remove a condition or group, or just refresh the live count (htmx)."""
    rules = forms.rules_from_form(request.form.to_dict())
    action = request.form.get("action", "")
    if action:
        rules = forms.edit_rules(rules, action)
    context = _builder_context(rules, request.form.get("name", ""))
    fragment = "audience/_segment_preview.html" if not action else "audience/_segment_builder.html"
    return render_template(fragment, **context, refresh_preview=bool(action))


@bp.post("/segments/<int:segment_id>/export")
@require(Permission.AUDIENCE_BULK_EXPORT)
def segment_export(segment_id: int):
    try:
        run = export.start_export(_actor(), segment_id, request.form.get("format", "csv"), session_signed_in_at())
    except export.ExportRefused as exc:
        flash(str(exc), "error")
        return redirect_after_post(url_for("audience.segment_edit", segment_id=segment_id))
    return redirect_after_post(url_for("core.job_status", job_run_id=run.id))


@bp.get("/exports/<int:job_run_id>")
@require(Permission.AUDIENCE_BULK_EXPORT)
def export_download(job_run_id: int):
    try:
        path = export.export_file_for(_actor(), job_run_id)
    except export.ExportRefused:
        abort(404)
    return send_file(path, as_attachment=True, download_name=path.name)


# --- tags, tag rules, scoring ------------------------------------------------------------------


@bp.route("/tags", methods=["GET", "POST"])
@require(Permission.AUDIENCE_VIEW)
def tags():
    form = forms.TagRuleForm()
    form.segment_id.choices = [
        forms.SelectChoice(str(s.id), s.name) for s in db.session.scalars(select(Segment).order_by(Segment.name))
    ]
    if request.method == "POST":
        if not current_user.can(Permission.AUDIENCE_EDIT):
            abort(403)
        if form.validate_on_submit():
            segment = db.session.get(Segment, int(form.segment_id.data))
            rule = tag_rules.save_rule(_actor(), form.tag.data, segment.rules)
            added = tag_rules.evaluate(rule.id)[0]
            flash(_("Tag rule saved: %(added)s contacts tagged.", added=added), "success")
            return redirect_after_post(url_for("audience.tags"))
    return render_template("audience/tags.html", tags=service.all_tags(), rules=tag_rules.list_rules(), form=form)


@bp.route("/scoring", methods=["GET", "POST"])
@require(Permission.AUDIENCE_VIEW)
def scoring_rules():
    form = forms.ScoringRuleForm()
    form.event_kind.choices = [forms.SelectChoice(k.value) for k in EventKind]
    if request.method == "POST":
        if not current_user.can(Permission.AUDIENCE_EDIT):
            abort(403)
        if form.validate_on_submit():
            scoring.save_rule(
                _actor(),
                form.label.data,
                form.event_kind.data,
                form.points.data,
                form.property_name.data or "",
                form.property_contains.data or "",
            )
            return redirect_after_post(url_for("audience.scoring_rules"))
    return render_template(
        "audience/scoring.html",
        rules=scoring.list_rules(),
        form=form,
        base=settings.get("scoring.base_score"),
        mql=settings.get("scoring.mql_threshold"),
    )


# --- integrations (events API tokens) --------------------------------------------------------


@bp.route("/integrations", methods=["GET", "POST"])
@require(Permission.API_TOKENS_MANAGE)
def integrations():
    form = forms.TokenForm()
    new_token = None
    if request.method == "POST" and request.form.get("revoke"):
        api.revoke_token(_actor(), int(request.form["revoke"]))
        return redirect_after_post(url_for("audience.integrations"))
    if form.validate_on_submit():
        new_token = api.create_token(_actor(), form.name.data)
    return render_template("audience/integrations.html", form=form, tokens=api.list_tokens(), new_token=new_token)
