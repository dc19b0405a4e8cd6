"""Audience pages: contacts, import, segments, tags and tag rules, scoring, privacy, API tokens."""

from __future__ import annotations

import json

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from portal import labels, settings
from portal.access import Permission, ReauthenticationRequired, require, session_step_up_at
from portal.audience import (
    api,
    export,
    forms,
    importing,
    importing_messages,
    privacy,
    scoring,
    segments,
    service,
    tag_rules,
)
from portal.audience import tags as tag_service
from portal.audience.models import Channel, Contact, EventKind, ImportJob, LifecycleStage, Segment
from portal.csv_download import csv_response
from portal.extensions import db
from portal.htmx import is_htmx, page_or_fragment, redirect_after_post
from portal.queue import JobRun, enqueue
from portal.storage import attachment

bp = Blueprint("audience", __name__)

FIELD_LABELS = labels.SEGMENT_FIELDS
OPERATOR_LABELS = labels.SEGMENT_OPERATORS
# What the builder offers for each field: only the operators the compiler accepts there.
TEXT_OPERATORS = ("eq", "ne", "contains", "in", "empty", "not_empty")
COUNT_OPERATORS = ("gte", "lte", "eq", "between")


def operators_for(field: str) -> tuple[str, ...]:
    if field in segments.TEXT_FIELDS:
        return TEXT_OPERATORS
    if field in ("region", "lifecycle_stage") or field.startswith("consent.") or field == "unsubscribed":
        return ("eq", "ne")
    if field == "tag":
        return ("has", "has_not")
    if field in ("created_days", "last_activity_days"):
        return ("lte", "gte")
    return COUNT_OPERATORS  # score and events


@bp.app_context_processor
def audience_labels():
    return {
        "segment_fields": FIELD_LABELS,
        "segment_operators": OPERATOR_LABELS,
        "operators_for": operators_for,
        "value_choices": value_choices,
        "rule_sentence": lambda rules: rules_sentence(rules),
        "import_status_label": lambda s: importing_messages.STATUS_LABELS.get(s, s),
    }


def rules_sentence(node: dict, depth: int = 0) -> str:
    """Segment rules as one readable sentence in the reader's language."""
    parts = []
    for item in (node or {}).get("items", []):
        if "items" in item:
            parts.append("（" + rules_sentence(item, depth + 1) + "）" if depth >= 0 else "")
            continue
        parts.append(_condition_sentence(item))
    if not parts:
        return str(_("every contact"))
    joiner = str(_(" and ")) if node.get("op", "and") == "and" else str(_(" or "))
    return joiner.join(parts)


def _condition_sentence(cond: dict) -> str:
    field = str(cond.get("field", ""))
    operator = str(cond.get("operator", "eq"))
    value = cond.get("value")
    if isinstance(value, list):
        value = labels.join_list(value)
    if field == "lifecycle_stage":
        value = labels.label("stage", value)
    elif field.startswith("consent."):
        value = labels.label("consent", value)
    elif field == "unsubscribed":
        value = _("yes") if value in (True, "1", "true", "yes", "是") else _("no")
    what = str(FIELD_LABELS.get(field, field))
    how = str(OPERATOR_LABELS.get(operator, operator))
    sentence = f"{what} {how}" if operator in ("empty", "not_empty") else f"{what} {how} “{value}”"
    if cond.get("days"):
        sentence += str(_(" in the last %(days)s days", days=cond["days"]))
    if cond.get("property") and cond.get("contains"):
        sentence += str(_(" (%(property)s contains “%(text)s”)", property=cond["property"], text=cond["contains"]))
    return sentence


def _actor():
    return current_user._get_current_object()


# --- contacts --------------------------------------------------------------------------------


def _contact_filter() -> service.ContactFilter:
    # From the query string only: a bulk action's form has a "tag" of its own.
    args = request.args
    return service.ContactFilter(
        text=args.get("q", ""),
        province=args.get("province", ""),
        industry=args.get("industry", ""),
        stage=args.get("stage", ""),
        tag=args.get("tag", ""),
        segment_id=args.get("segment", type=int),
        consent=args.get("consent", ""),
        sort=args.get("sort", ""),
    )


@bp.get("/contacts")
@require(Permission.AUDIENCE_VIEW)
def contacts():
    page = service.search_contacts(_contact_filter(), request.args.get("page", 1, type=int))
    return page_or_fragment(
        "audience/contacts.html",
        "audience/_contacts_table.html",
        page=page,
        args=request.args,
        stages=labels.LIFECYCLE_STAGES,
        segments=list(db.session.scalars(select(Segment).order_by(Segment.name))),
        tags=service.all_tags(),
    )


def _selection():
    ids = [int(v) for v in request.form.getlist("contact") if v.isdigit()]
    return service.selected_ids(_contact_filter(), ids)


@bp.post("/contacts/bulk")
@require(Permission.AUDIENCE_EDIT)
def bulk_action():
    action = request.form.get("action", "")
    back = url_for("audience.contacts", **{k: v for k, v in request.args.items()})
    try:
        if action == "export":
            return _export_selection()
        changed = service.bulk_tag(
            _actor(), _selection(), request.form.get("tag", ""), action != "untag", session_step_up_at()
        )
    except service.AudienceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    except ReauthenticationRequired:
        # More than BULK_LIMIT contacts: a step-up first (the app's handler), then back to the list.
        db.session.rollback()
        raise
    else:
        message = (
            _("Tag added to %(count)s contacts.", count=changed)
            if action != "untag"
            else _("Tag removed from %(count)s contacts.", count=changed)
        )
        flash(message, "success")
    return redirect_after_post(back)


def _export_selection():
    rows = service.export_selection(_actor(), _selection(), session_step_up_at())
    headers = [
        labels.label("import_field", c) if c in labels.IMPORT_FIELDS else EXPORT_HEADERS[c]
        for c in service.EXPORT_COLUMNS
    ]
    stage = service.EXPORT_COLUMNS.index("lifecycle_stage")
    readable = ([*row[:stage], labels.label("stage", row[stage]), *row[stage + 1 :]] for row in rows)
    return csv_response(headers, readable, "contacts.csv")


EXPORT_HEADERS = {"id": _l("Number"), "score": _l("Score"), "lifecycle_stage": _l("Lifecycle stage")}

CONTACT_FIELDS = ("email", "mobile", "name", "company", "industry", "province", "city", "company_size")


@bp.route("/contacts/new", methods=["GET", "POST"])
@require(Permission.AUDIENCE_EDIT)
def new_contact():
    form = forms.ContactForm()
    if form.validate_on_submit():
        values = {k: getattr(form, k).data for k in CONTACT_FIELDS}
        try:
            contact = service.create_contact(
                _actor(), {**values, "owner_id": current_user.id}, {"email": form.consent_email.data}, source="manual"
            )
        except service.AudienceError as exc:
            db.session.rollback()
            form.email.errors = [str(exc)]
        else:
            flash(_("Contact created."), "success")
            return redirect_after_post(url_for("audience.contact", contact_id=contact.id))
    return render_template("audience/contact_form.html", form=form, contact=None), 422 if form.is_submitted() else 200


@bp.route("/contacts/<int:contact_id>/edit", methods=["GET", "POST"])
@require(Permission.AUDIENCE_EDIT)
def edit_contact(contact_id: int):
    from portal.audience.models import Contact

    contact = db.session.get(Contact, contact_id) or abort(404)
    form = forms.ContactEditForm(obj=contact)
    form.owner_id.choices = forms.owner_choices()
    if request.method == "GET":
        form.owner_id.data = str(contact.owner_id or "")
        attributes = [(name, str(value)) for name, value in (contact.attributes or {}).items()]
    else:  # shown again as typed when the save is refused
        attributes = list(zip(request.form.getlist("attr_name"), request.form.getlist("attr_value"), strict=False))
    if form.validate_on_submit():
        try:
            service.update_contact(
                _actor(), contact.id, {k: getattr(form, k).data for k in CONTACT_FIELDS}, attributes=attributes
            )
            service.change_owner(_actor(), contact.id, int(form.owner_id.data) if form.owner_id.data else None)
        except service.AudienceError as exc:
            db.session.rollback()
            if exc.code.startswith("attribute_"):
                flash(str(exc), "error")
            else:
                form.email.errors = [str(exc)]
        else:
            flash(_("Contact saved."), "success")
            return redirect_after_post(url_for("audience.contact", contact_id=contact.id))
    attributes = [(name, value) for name, value in attributes if name.strip() or value.strip()]
    return render_template("audience/contact_form.html", form=form, contact=contact, attributes=attributes), (
        422 if form.is_submitted() else 200
    )


@bp.get("/contacts/<int:contact_id>")
@require(Permission.AUDIENCE_VIEW)
def contact(contact_id: int):
    try:
        profile = service.contact_profile(contact_id)
    except service.AudienceError:
        abort(404)
    return render_template(
        "audience/contact.html",
        **profile,
        mql=settings.get("scoring.mql_threshold"),
        activity_kinds=service.OFFLINE_ACTIVITY_KINDS,
        channels=list(Channel),
    )


def _contact_action(contact_id: int, run, success: str):
    """Run one change from the contact page, then back to it with what happened."""
    try:
        run()
    except service.AudienceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        flash(success, "success")
    return redirect_after_post(url_for("audience.contact", contact_id=contact_id))


@bp.post("/contacts/<int:contact_id>/tags")
@require(Permission.AUDIENCE_EDIT)
def add_tag(contact_id: int):
    return _contact_action(
        contact_id, lambda: service.add_tag(_actor(), contact_id, request.form.get("tag", "")), _("Tag added.")
    )


@bp.post("/contacts/<int:contact_id>/tags/<int:tag_id>/delete")
@require(Permission.AUDIENCE_EDIT)
def remove_tag(contact_id: int, tag_id: int):
    return _contact_action(contact_id, lambda: service.remove_tag(_actor(), contact_id, tag_id), _("Tag removed."))


@bp.post("/contacts/<int:contact_id>/consent")
@require(Permission.AUDIENCE_EDIT)
def change_consent(contact_id: int):
    channel, status = request.form.get("channel", ""), request.form.get("status", "")
    return _contact_action(
        contact_id, lambda: service.change_consent(_actor(), contact_id, channel, status), _("Consent saved.")
    )


@bp.post("/contacts/<int:contact_id>/notes")
@require(Permission.AUDIENCE_EDIT)
def add_note(contact_id: int):
    text = request.form.get("text", "")
    return _contact_action(contact_id, lambda: service.add_note(_actor(), contact_id, text), _("Note added."))


@bp.post("/contacts/<int:contact_id>/activities")
@require(Permission.AUDIENCE_EDIT)
def log_activity(contact_id: int):
    form = request.form
    when = _parse_local_time(form.get("occurred_at", ""))
    return _contact_action(
        contact_id,
        lambda: service.log_activity(_actor(), contact_id, form.get("kind", ""), when, form.get("note", "")),
        _("Activity logged."),
    )


def _parse_local_time(raw: str):
    """A datetime-local field, read in the portal's display time zone; None when empty or bad."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from flask_babel import get_timezone

    try:
        moment = datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None
    return moment.replace(tzinfo=ZoneInfo(str(get_timezone()))) if moment and moment.tzinfo is None else moment


@bp.route("/contacts/<int:contact_id>/privacy-export", methods=["GET", "POST"])
@require(Permission.PRIVACY_REQUESTS)
def privacy_export(contact_id: int):
    """GET asks for confirmation (a link prefetcher must never create a personal-data export);
    the export is made by the POST."""
    contact = db.session.get(Contact, contact_id) or abort(404)
    if request.method == "GET":
        return render_template("audience/privacy_export.html", contact=contact)
    data = privacy.export_person(_actor(), contact_id, session_step_up_at())
    return Response(
        json.dumps(data, ensure_ascii=False, indent=2),
        mimetype="application/json",
        headers={"Content-Disposition": f"attachment; filename=contact-{contact_id}.json"},
    )


@bp.post("/contacts/<int:contact_id>/erase")
@require(Permission.PRIVACY_REQUESTS)
def erase(contact_id: int):
    privacy.erase_person(_actor(), contact_id, session_step_up_at())
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
            upload.close()
            form.file.errors = [importing_messages.refusal(exc)]
        else:
            upload.close()  # the spooled copy of a large upload, now stored
            return redirect_after_post(url_for("audience.import_mapping", import_id=job.id))
    return render_template("audience/imports.html", form=form, jobs=importing.recent_imports(_actor())), (
        422 if form.is_submitted() else 200
    )


def _import_job(import_id: int) -> ImportJob:
    """The import if the signed-in person may see it (theirs, or any for an administrator)."""
    try:
        return importing.import_for(_actor(), import_id)
    except importing.ImportRefused:
        abort(404)


def _mapping_context(job: ImportJob, error: str | None = None, form=None) -> dict:
    try:
        preview = importing.preview(job)
    except importing.ImportRefused as exc:
        preview, error = None, error or importing_messages.refusal(exc)
    encoding_form = forms.EncodingForm(encoding=job.encoding)
    # The file's encoding first, then the others offered, each label once (UTF-16 LE is UTF-16).
    offered: dict[str, str] = {}
    for name in (job.encoding, *importing.ENCODING_CHOICES):
        offered.setdefault(importing_messages.encoding_label(name), name)
    encoding_form.encoding.choices = [forms.SelectChoice(name, label) for label, name in offered.items() if name]
    return {
        "job": job,
        "preview": preview,
        "form": form or forms.ImportOptionsForm(),
        "encoding_form": encoding_form,
        "error": error,
        "fields": importing.IMPORT_FIELDS,
        "field_label": importing_messages.field_label,
        "encoding_label": importing_messages.encoding_label,
        "is_text": importing.file_kind(importing.upload_path(job)) == "text",
    }


@bp.route("/imports/<int:import_id>/mapping", methods=["GET", "POST"])
@require(Permission.AUDIENCE_IMPORT)
def import_mapping(import_id: int):
    job = _import_job(import_id)
    if job.status != "uploaded":
        return redirect_after_post(url_for("audience.import_result", import_id=job.id))
    form = forms.ImportOptionsForm()
    error = None
    if form.validate_on_submit():
        mapping = {key[4:]: value for key, value in request.form.items() if key.startswith("col-")}
        try:
            importing.confirm(_actor(), job.id, mapping, form.merge_policy.data, form.default_consent.data)
        except importing.ImportRefused as exc:
            db.session.rollback()
            if exc.code == "not_found":
                abort(404)
            error = importing_messages.refusal(exc)
        else:
            run = enqueue("jobs.audience.run_import", job.id, kind="import", actor=_actor(), timeout=3 * 3600)
            job.job_run_id = run.id
            db.session.commit()
            return redirect_after_post(url_for("audience.import_result", import_id=job.id))
    context = _mapping_context(job, error, form)
    return page_or_fragment("audience/import_mapping.html", "audience/_import_mapping.html", **context), (
        422 if error else 200
    )


@bp.post("/imports/<int:import_id>/encoding")
@require(Permission.AUDIENCE_IMPORT)
def import_encoding(import_id: int):
    """Read the file with the encoding the person picked; htmx gets the new preview."""
    try:
        job = importing.choose_encoding(_actor(), import_id, request.form.get("encoding", ""))
    except importing.ImportRefused as exc:
        db.session.rollback()
        if exc.code == "not_found":
            abort(404)
        job = _import_job(import_id)
        context = _mapping_context(job, importing_messages.refusal(exc))
        return page_or_fragment("audience/import_mapping.html", "audience/_import_mapping.html", **context), 422
    if is_htmx():
        return render_template("audience/_import_mapping.html", **_mapping_context(job))
    return redirect_after_post(url_for("audience.import_mapping", import_id=job.id))


@bp.get("/imports/<int:import_id>")
@require(Permission.AUDIENCE_IMPORT)
def import_result(import_id: int):
    job = _import_job(import_id)
    run = db.session.get(JobRun, job.job_run_id) if job.job_run_id else None
    rejects = importing_messages.shown_rejects(job) if job.status in ("done", "failed") and job.rejected else []
    return page_or_fragment(
        "audience/import_result.html",
        "audience/_import_outcome.html",
        job=job,
        run=run,
        rejects=rejects,
        failure=importing_messages.failure(job) if job.status == "failed" else "",
    )


@bp.get("/imports/<int:import_id>/rejected.csv")
@require(Permission.AUDIENCE_IMPORT)
def import_rejected(import_id: int):
    job = _import_job(import_id)
    if job.status not in ("done", "failed") or not importing.report_path(job).exists():
        abort(404)
    return Response(
        stream_with_context(importing_messages.report_csv(job)),
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=import-{job.id}-rejected.csv"},
    )


# --- segments --------------------------------------------------------------------------------


@bp.get("/segments")
@require(Permission.AUDIENCE_VIEW)
def segment_list():
    items = list(db.session.scalars(select(Segment).order_by(Segment.name)))
    counts = {s.id: _safe_count(s.rules) for s in items}
    return render_template("audience/segments.html", segments=items, counts=counts)


def _safe_count(rules: dict) -> int | None:
    try:
        return segments.count_segment(rules)
    except segments.SegmentRuleError:
        return None


@bp.post("/segments/<int:segment_id>/delete")
@require(Permission.AUDIENCE_EDIT)
def segment_delete(segment_id: int):
    try:
        segments.delete_segment(_actor(), segment_id)
    except service.AudienceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect_after_post(url_for("audience.segment_edit", segment_id=segment_id))
    flash(_("Segment deleted."), "success")
    return redirect_after_post(url_for("audience.segment_list"))


def _fit_operators(node: dict) -> dict:
    """After a field changes, its comparison becomes the first one that fits the new field."""
    items = []
    for item in node.get("items", []):
        if "items" in item:
            items.append(_fit_operators(item))
            continue
        allowed = operators_for(str(item.get("field", "")))
        items.append(item if item.get("operator") in allowed else {**item, "operator": allowed[0]})
    return {**node, "items": items}


def value_choices(field: str) -> list[tuple[str, object]]:
    """Fields with a fixed set of values get a list to choose from instead of a text box."""
    if field == "region":
        return [(r, r) for r in segments.REGION_GROUPS]
    if field == "lifecycle_stage":
        return list(labels.LIFECYCLE_STAGES.items())
    if field.startswith("consent."):
        return list(labels.CONSENT_STATES.items())
    if field == "unsubscribed":
        return [("1", _("yes")), ("0", _("no"))]
    return []


def _builder_context(rules: dict, name: str = "", segment: Segment | None = None) -> dict:
    preview = {"count": None, "sample": [], "error": None}
    try:
        # A condition still waiting for its value is left out of the live count, not an error.
        compiled_rules = forms.coerce_values(forms.without_blank_conditions(rules))
        preview["count"] = segments.count_segment(compiled_rules)
        preview["sample"] = segments.sample_segment(compiled_rules, 8)
    except segments.SegmentRuleError as exc:
        preview["error"] = str(exc)
    rules = _fit_operators(rules)
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
                raise segments.SegmentRuleError("name_missing")
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
        run = export.start_export(_actor(), segment_id, request.form.get("format", "csv"), session_step_up_at())
    except export.ExportRefused as exc:
        flash(str(exc), "error")
        return redirect_after_post(url_for("audience.segment_edit", segment_id=segment_id))
    return redirect_after_post(url_for("core.job_status", job_run_id=run.id))


@bp.get("/exports/<int:job_run_id>")
@require(Permission.AUDIENCE_BULK_EXPORT)
def export_download(job_run_id: int):
    try:
        chunks, name, mimetype = export.export_file_for(_actor(), job_run_id)
    except export.ExportRefused:
        abort(404)
    return attachment(chunks, name, mimetype)


# --- tags, tag rules, scoring ------------------------------------------------------------------


@bp.route("/tags", methods=["GET", "POST"])
@require(Permission.AUDIENCE_VIEW)
def tags():
    form = forms.TagRuleForm()
    segment_choices = [
        forms.SelectChoice(str(s.id), s.name) for s in db.session.scalars(select(Segment).order_by(Segment.name))
    ]
    form.segment_id.choices = segment_choices
    status = 200
    if request.method == "POST":
        if not current_user.can(Permission.AUDIENCE_EDIT):
            abort(403)
        if form.validate_on_submit():
            segment = db.session.get(Segment, int(form.segment_id.data))
            rule = tag_rules.save_rule(_actor(), form.tag.data, segment.rules)
            added = tag_rules.evaluate(rule.id)[0]
            flash(_("Tag rule saved: %(added)s contacts tagged.", added=added), "success")
            return redirect_after_post(url_for("audience.tags"))
        status = 422
    return render_template(
        "audience/tags.html",
        tags=tag_service.tags_with_counts(),
        rules=tag_rules.list_rules(),
        form=form,
        segment_choices=segment_choices,
    ), status


def _tags_action(run, success):
    try:
        result = run()
    except service.AudienceError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        flash(success(result) if callable(success) else success, "success")
    return redirect_after_post(url_for("audience.tags"))


@bp.post("/tags/new")
@require(Permission.AUDIENCE_EDIT)
def tag_create():
    return _tags_action(lambda: tag_service.create_tag(_actor(), request.form.get("name", "")), _("Tag created."))


@bp.post("/tags/<int:tag_id>/rename")
@require(Permission.AUDIENCE_EDIT)
def tag_rename(tag_id: int):
    return _tags_action(
        lambda: tag_service.rename_tag(_actor(), tag_id, request.form.get("name", "")), _("Tag renamed.")
    )


@bp.post("/tags/<int:tag_id>/merge")
@require(Permission.AUDIENCE_EDIT)
def tag_merge(tag_id: int):
    into = request.form.get("into", type=int) or 0
    return _tags_action(
        lambda: tag_service.merge_tags(_actor(), tag_id, into),
        lambda moved: _("Tags merged: %(count)s contacts gained the tag.", count=moved),
    )


@bp.post("/tags/<int:tag_id>/delete")
@require(Permission.AUDIENCE_EDIT)
def tag_delete(tag_id: int):
    return _tags_action(
        lambda: tag_service.delete_tag(_actor(), tag_id),
        lambda count: _("Tag deleted; %(count)s contacts no longer carry it.", count=count),
    )


@bp.post("/tag-rules/<int:rule_id>/enabled")
@require(Permission.AUDIENCE_EDIT)
def tag_rule_enabled(rule_id: int):
    enabled = request.form.get("enabled") == "1"
    return _tags_action(
        lambda: tag_rules.set_enabled(_actor(), rule_id, enabled),
        _("Tag rule enabled.") if enabled else _("Tag rule disabled; the tags it gave stay."),
    )


@bp.post("/tag-rules/<int:rule_id>/segment")
@require(Permission.AUDIENCE_EDIT)
def tag_rule_edit(rule_id: int):
    """Point a rule at another segment's conditions (and re-apply it at once)."""
    from portal.audience.models import Tag, TagRule

    rule = db.session.get(TagRule, rule_id) or abort(404)
    segment = db.session.get(Segment, request.form.get("segment_id", type=int) or 0)
    if segment is None:
        flash(str(service.AudienceError("no_such_segment")), "error")
        return redirect_after_post(url_for("audience.tags"))
    tag = db.session.get(Tag, rule.tag_id)
    saved = tag_rules.save_rule(_actor(), tag.name, segment.rules, rule_id=rule.id)
    added, removed = tag_rules.evaluate(saved.id)
    flash(
        _("Tag rule saved: %(added)s contacts tagged, %(removed)s untagged.", added=added, removed=removed), "success"
    )
    return redirect_after_post(url_for("audience.tags"))


@bp.post("/tag-rules/<int:rule_id>/delete")
@require(Permission.AUDIENCE_EDIT)
def tag_rule_delete(rule_id: int):
    remove = request.form.get("remove_tags") == "1"
    return _tags_action(
        lambda: tag_rules.delete_rule(_actor(), rule_id, remove),
        lambda removed: _("Tag rule deleted; %(count)s contacts lost its tag.", count=removed),
    )


# The portal's own bookkeeping, which no scoring rule should count.
SCORELESS_KINDS = (EventKind.MQL, EventKind.STAGE_CHANGE, EventKind.IMPORTED, EventKind.CONSENT_CHANGE, EventKind.NOTE)


@bp.route("/scoring", methods=["GET", "POST"])
@require(Permission.AUDIENCE_VIEW)
def scoring_rules():
    form = forms.ScoringRuleForm()
    form.event_kind.choices = [
        forms.SelectChoice(k.value, labels.label("event", k.value)) for k in EventKind if k not in SCORELESS_KINDS
    ]
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
