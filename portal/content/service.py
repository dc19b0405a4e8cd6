"""The content library's rules: versions, the review workflow, and what may be sent.

Nothing reaches a customer unapproved: an approved version never changes, editing one makes
a new draft, nobody who wrote any of a version can approve it, a version sent back with
"request changes" is frozen as it was reviewed (the author's edits go into a new version),
and `approved_version` is the only way the send pipeline gets content."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import nh3
from sqlalchemy import String, cast, func, or_, select

from portal import audit, labels
from portal.access import Permission
from portal.auth.models import User
from portal.content import blocks, diff, lint, starters
from portal.content.models import (
    Asset,
    AssetKind,
    AssetVersion,
    ContentTemplate,
    ForbiddenWord,
    LinkRule,
    ReviewComment,
    VersionContributor,
    VersionStatus,
)
from portal.delivery.render import (
    CompiledTemplate,
    RenderLimitExceeded,
    TemplateRefused,
    compile_template,
    sample_variables,
)
from portal.extensions import db
from portal.models_base import utcnow
from portal.notify import notify
from portal.paging import Page, paginate

# What author HTML may contain: email-safe markup and inline styles, nothing that runs.
ALLOWED_TAGS = {
    "a",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "s",
    "p",
    "br",
    "hr",
    "div",
    "span",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "img",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "tr",
    "td",
    "th",
    "blockquote",
    "small",
    "sup",
    "sub",
    "center",
    "font",
    "pre",
    "code",
}
ALLOWED_ATTRIBUTES = {
    "*": {"style", "class", "align", "width", "height", "bgcolor", "color", "dir", "title"},
    "a": {"href", "target", "name"},
    "img": {"src", "alt", "border"},
    "table": {"cellpadding", "cellspacing", "border", "role"},
    "td": {"colspan", "rowspan", "valign"},
    "th": {"colspan", "rowspan", "valign", "scope"},
    "font": {"face", "size"},
}


class ContentError(Exception):
    """A refused content action: a `code` and its `params`; the page makes the sentence."""

    def __init__(self, code: str, **params: Any):
        super().__init__(code)
        self.code, self.params = code, params


@dataclass
class EmailFields:
    subject: str = ""
    preheader: str = ""
    html_body: str = ""
    text_body: str = ""
    text_written_by_hand: bool = False


def sanitise_html(html: str) -> str:
    """Scripts, event handlers, hx-* attributes and javascript: URLs never survive."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel=None,
        strip_comments=True,
    )


def text_from_html(html: str) -> str:
    """The plain-text part derived from the HTML: paragraphs kept, links written out as
    `文字 (https://…)`."""
    return blocks.html_to_text(html)


def compile_version(version: AssetVersion | dict[str, Any], kind: str) -> dict[str, CompiledTemplate]:
    """Compile every template field of a version; TemplateRefused names the field and line."""
    fields = version if isinstance(version, dict) else version.fields()
    names = {
        "email": ("subject", "preheader", "html_body", "text_body"),
        "sms": ("sms_text",),
        "wecom": ("wecom_text",),
    }[kind]
    compiled = {}
    for name in names:
        try:
            compiled[name] = compile_template(fields.get(name, ""), html=name == "html_body")
        except TemplateRefused as exc:
            raise exc.in_field(name) from exc
    return compiled


def _check_can_edit(actor: User) -> None:
    if not actor.can(Permission.CONTENT_EDIT):
        raise ContentError("may_not_edit")


def create_asset(actor: User, kind: str, name: str, tags: list[str] | None = None, start_from: str = "") -> Asset:
    """A new asset with its first draft. `start_from` names what the draft starts as: a
    portal template ("builtin:<key>"), a saved one ("template:<id>"), or a previous message
    ("asset:<id>"), or a small block document ("blocks", emails only); nothing named: empty."""
    _check_can_edit(actor)
    if kind not in set(AssetKind):
        raise ContentError("unknown_kind")
    if not name.strip():
        raise ContentError("name_missing")
    asset = Asset(kind=kind, name=name.strip(), owner_id=actor.id, tags=_clean_tags(tags))
    db.session.add(asset)
    db.session.flush()
    version = AssetVersion(asset_id=asset.id, number=1, author_id=actor.id)
    for key, value in _starting_fields(kind, start_from).items():
        setattr(version, key, value)
    db.session.add(version)
    db.session.flush()
    _add_contributor(version, actor.id)
    audit.record(actor, "content.created", f"asset:{asset.id}", {"kind": kind, "name": asset.name, "from": start_from})
    db.session.commit()
    return asset


TEMPLATE_FIELDS = ("subject", "preheader", "blocks", "html_body", "text_body", "sms_text", "wecom_format", "wecom_text")


def _starting_fields(kind: str, start_from: str) -> dict[str, Any]:
    source, _, key = start_from.partition(":")
    if source == "builtin":
        found = starters.template(key)
        if found is None or found.kind != kind:
            raise ContentError("no_such_template")
        fields = found.fields()
    elif source == "template":
        saved = db.session.get(ContentTemplate, int(key)) if key.isdigit() else None
        if saved is None or saved.kind != kind:
            raise ContentError("no_such_template")
        fields = dict(saved.fields)
    elif source == "asset":
        previous = db.session.get(Asset, int(key)) if key.isdigit() else None
        if previous is None or previous.kind != kind:
            raise ContentError("no_such_content")
        fields = {name: getattr(previous.latest, name) for name in TEMPLATE_FIELDS}
    elif source == "blocks" and kind == AssetKind.EMAIL:
        fields = {"blocks": blocks.starter_document()}
    else:
        return {}
    fields = {name: value for name, value in fields.items() if name in TEMPLATE_FIELDS}
    if fields.get("blocks"):
        document = blocks.clean_document(fields["blocks"])
        fields["blocks"] = document
        fields["html_body"] = blocks.render_html(document, fields.get("preheader", ""))
        fields["text_body"] = blocks.render_text(document)
    return fields


def save_as_template(actor: User, version_id: int, name: str) -> ContentTemplate:
    """Anyone who may edit content may keep a message as a template for the next ones."""
    _check_can_edit(actor)
    version = _version(version_id)
    if not name.strip():
        raise ContentError("name_missing")
    template = ContentTemplate(
        kind=version.asset.kind,
        name=name.strip()[:200],
        fields={key: getattr(version, key) for key in TEMPLATE_FIELDS},
        created_by_id=actor.id,
    )
    db.session.add(template)
    db.session.flush()
    audit.record(actor, "content.template_saved", f"template:{template.id}", {"version": version.id})
    db.session.commit()
    return template


def templates_for(kind: str) -> list[tuple[str, str]]:
    """(start_from value, name) of every template of a kind: the portal's, then saved ones."""
    choices = [(f"builtin:{t.key}", t.name) for t in starters.TEMPLATES if t.kind == kind]
    saved = db.session.scalars(
        select(ContentTemplate).where(ContentTemplate.kind == kind).order_by(ContentTemplate.name)
    )
    return choices + [(f"template:{t.id}", t.name) for t in saved]


def _clean_tags(tags: list[str] | None) -> list[str]:
    return sorted({t.strip() for t in (tags or []) if t.strip()})


def _add_contributor(version: AssetVersion, user_id: int | None) -> None:
    if user_id is not None and user_id not in contributor_ids(version):
        version.contributors.append(VersionContributor(version_id=version.id, user_id=user_id))


def contributor_ids(version: AssetVersion) -> set[int]:
    """Everyone who wrote any part of the version."""
    return {c.user_id for c in version.contributors}


def save_draft(actor: User, version_id: int, values: dict[str, Any]) -> AssetVersion:
    """Save a draft's fields; whoever changes any of them becomes one of its contributors.
    Author HTML is sanitised; templates that do not compile, name unknown variables or use
    loader tags are refused with their line, and nothing changes (not even in the session)."""
    _check_can_edit(actor)
    version = _version(version_id)
    if version.status != VersionStatus.DRAFT:
        raise ContentError("not_a_draft")
    kind = version.asset.kind
    new: dict[str, Any] = version.fields()
    settings: dict[str, Any] = {}
    if kind == AssetKind.EMAIL:
        new["subject"] = str(values.get("subject", "")).replace("\r", " ").replace("\n", " ").strip()
        new["preheader"] = str(values.get("preheader", "")).strip()
        document = document_from(values.get("blocks"))
        if document is not None:
            new["html_body"] = blocks.render_html(document, new["preheader"])
            generated_text = blocks.render_text(document)
        else:
            new["html_body"] = sanitise_html(str(values.get("html_body", "")))
            generated_text = text_from_html(new["html_body"])
        by_hand = bool(values.get("text_written_by_hand"))
        new["text_body"] = str(values.get("text_body", "")) if by_hand else generated_text
        settings["text_written_by_hand"] = by_hand
        settings["blocks"] = document
    elif kind == AssetKind.SMS:
        new["sms_text"] = str(values.get("sms_text", "")).strip()
    else:
        new["wecom_text"] = str(values.get("wecom_text", "")).strip()
        settings["wecom_format"] = "markdown" if values.get("wecom_format") == "markdown" else "text"
    compile_version(new, kind)  # raises TemplateRefused before anything changes
    changes = {key: value for key, value in {**new, **settings}.items() if getattr(version, key) != value}
    for key, value in changes.items():
        setattr(version, key, value)
    if changes:
        _add_contributor(version, actor.id)
    if "name" in values and str(values["name"]).strip():
        version.asset.name = str(values["name"]).strip()
    if "tags" in values:
        version.asset.tags = _clean_tags(values["tags"])
    audit.record(actor, "content.draft_saved", f"version:{version.id}", {"asset": version.asset_id})
    db.session.commit()
    return version


def document_from(raw: Any) -> dict[str, Any] | None:
    """A block document from a save (a dict or its JSON); None for a hand-written HTML message."""
    if raw is None or raw == "":
        return None
    try:
        return blocks.clean_document(json.loads(raw) if isinstance(raw, str) else raw)
    except (ValueError, blocks.BlocksRefused) as exc:
        raise ContentError("blocks_invalid") from exc


def new_draft_from(actor: User, asset_id: int) -> AssetVersion:
    """Start the next version from the newest one; an asset has at most one open version.
    A version continued from one that was never approved keeps that version's contributors:
    its text is still theirs, unreviewed."""
    _check_can_edit(actor)
    asset = db.session.get(Asset, asset_id)
    if asset is None:
        raise ContentError("no_such_content")
    latest = asset.latest
    if latest.status in (VersionStatus.DRAFT, VersionStatus.IN_REVIEW):
        return latest
    draft = AssetVersion(
        asset_id=asset.id,
        number=latest.number + 1,
        author_id=actor.id,
        subject=latest.subject,
        preheader=latest.preheader,
        html_body=latest.html_body,
        text_body=latest.text_body,
        text_written_by_hand=latest.text_written_by_hand,
        blocks=copy.deepcopy(latest.blocks),
        sms_text=latest.sms_text,
        wecom_format=latest.wecom_format,
        wecom_text=latest.wecom_text,
    )
    db.session.add(draft)
    db.session.flush()
    if latest.status == VersionStatus.RETURNED:
        for user_id in sorted(contributor_ids(latest)):
            _add_contributor(draft, user_id)
    _add_contributor(draft, actor.id)
    audit.record(actor, "content.new_version", f"version:{draft.id}", {"asset": asset.id, "from": latest.id})
    db.session.commit()
    return draft


def run_checks(version: AssetVersion) -> list[lint.Finding]:
    return check_fields(version.asset.kind, version.fields(), version.blocks)


def check_fields(kind: str, fields: dict[str, str], document: dict[str, Any] | None = None) -> list[lint.Finding]:
    """The automatic checks on a version's fields, saved or as they are being typed. The
    subject's length is measured as the sample contact would see it; findings in a block
    document name the block at fault (`Finding.block`)."""
    from flask import current_app

    words = [(w.word, w.severity) for w in db.session.scalars(select(ForbiddenWord))]
    rules = lint.LinkRules()
    for rule in db.session.scalars(select(LinkRule)):
        {"deny": rules.deny_domains, "allow": rules.allow_domains, "shortener": rules.shortener_domains}[
            rule.kind
        ].append(rule.domain)
    rendered_subject = None
    if kind == AssetKind.EMAIL:
        try:
            rendered_subject = compile_template(fields.get("subject", ""), html=False).render(sample_variables())
        except (TemplateRefused, RenderLimitExceeded):
            rendered_subject = None
    findings = lint.check_version(
        kind, fields, words, rules, current_app.config["SMS_OPT_OUT_TEXT"], rendered_subject=rendered_subject
    )
    if document:
        _point_at_blocks(findings, fields, document)
    return findings


def _point_at_blocks(findings: list[lint.Finding], fields: dict[str, str], document: dict[str, Any]) -> None:
    """Name the block a finding in the email body comes from: the image, link or words it is about."""
    body_text = "".join(lint.html_facts(fields.get("html_body", "")).text)
    settings = [
        (block["id"], [str(value) for value in block.values()])
        for section in document["sections"]
        for block in section["blocks"]
    ]
    for finding in findings:
        needle = finding.detail
        if finding.code == "forbidden_word" and finding.field == "html_body" and finding.start is not None:
            needle = body_text[finding.start : finding.end]
        elif finding.field not in ("html_body", "") or finding.code == "image_alt":
            needle = finding.detail if finding.code == "image_alt" else ""
        if needle:
            # A setting that is the link or picture itself first, then text that contains it.
            exact = (block_id for block_id, values in settings if needle in values)
            within = (block_id for block_id, values in settings if any(needle in value for value in values))
            finding.block = next(exact, "") or next(within, "")


def submit_for_review(actor: User, version_id: int) -> list[lint.Finding]:
    """Run the checks; with no blocking finding, put the version in review and tell the
    reviewers. Returns the findings either way (blocking ones raise)."""
    _check_can_edit(actor)
    version = _version(version_id)
    if version.status != VersionStatus.DRAFT:
        raise ContentError("not_a_draft")
    findings = run_checks(version)
    if lint.has_blocking(findings):
        raise ChecksFailed(findings)
    version.status = VersionStatus.IN_REVIEW
    version.checks = [f.as_dict() for f in findings]
    version.submitted_at = utcnow()
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="submitted"))
    audit.record(actor, "content.submitted", f"version:{version.id}", {"warnings": len(findings)})
    notify(
        _reviewer_ids(exclude=actor.id),
        link=f"/content/{version.asset_id}",
        kind="content.submitted",
        asset=version.asset.name,
        version=version.number,
    )
    db.session.commit()
    return findings


class ChecksFailed(ContentError):
    def __init__(self, findings: list[lint.Finding]):
        super().__init__("checks_failed")
        self.findings = findings


def _reviewer_ids(exclude: int) -> list[int]:
    users = db.session.scalars(select(User).where(User.active.is_(True)))
    return [u.id for u in users if u.id != exclude and u.can(Permission.CONTENT_REVIEW)]


def withdraw(actor: User, version_id: int) -> None:
    version = _version(version_id)
    if version.status != VersionStatus.IN_REVIEW:
        raise ContentError("not_in_review")
    if version.author_id != actor.id:
        raise ContentError("only_author_withdraws")
    version.status = VersionStatus.DRAFT
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="withdrawn"))
    audit.record(actor, "content.withdrawn", f"version:{version.id}")
    db.session.commit()


def approve(actor: User, version_id: int, comment: str = "") -> None:
    """Approve a version in review. Nobody who wrote any of it (created it, saved a change to
    it, or wrote the unapproved version it continues) can approve it, whatever roles they hold."""
    version = _review_target(actor, version_id)
    if actor.id in contributor_ids(version):
        raise ContentError("contributor_cannot_approve", version=version.number)
    for previous in version.asset.versions:
        if previous.status == VersionStatus.APPROVED:
            previous.status = VersionStatus.SUPERSEDED
    version.status = VersionStatus.APPROVED
    version.decided_at = utcnow()
    version.decided_by_id = actor.id
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="approved", body=comment.strip()))
    audit.record(actor, "content.approved", f"version:{version.id}", {"asset": version.asset_id})
    _tell_contributors(version, "content.approved", comment)
    db.session.commit()


def _tell_contributors(version: AssetVersion, kind: str, comment: str) -> None:
    """The writers of a version hear the reviewer's decision, with the comment, and the link
    opens the version that was reviewed. The notification is a kind with parameters, made a
    sentence in each reader's language (portal.labels.NOTIFICATIONS)."""
    comment = " ".join(comment.split())
    notify(
        contributor_ids(version) | ({version.author_id} if version.author_id else set()),
        link=f"/content/{version.asset_id}?version={version.id}",
        kind=f"{kind}_with_comment" if comment else kind,
        asset=version.asset.name,
        version=version.number,
        comment=comment[:400],
    )


def request_changes(actor: User, version_id: int, comment: str) -> None:
    """Send a version back: it is frozen as it was reviewed (status `returned`), and the
    author's edits go into a new version whose review shows the difference."""
    version = _review_target(actor, version_id)
    if not comment.strip():
        raise ContentError("changes_comment_missing")
    version.status = VersionStatus.RETURNED
    version.decided_at = utcnow()
    version.decided_by_id = actor.id
    db.session.add(
        ReviewComment(version_id=version.id, author_id=actor.id, kind="changes_requested", body=comment.strip())
    )
    audit.record(actor, "content.changes_requested", f"version:{version.id}", {"asset": version.asset_id})
    _tell_contributors(version, "content.changes_requested", comment)
    db.session.commit()


def add_comment(actor: User, version_id: int, body: str) -> None:
    if not (actor.can(Permission.CONTENT_EDIT) or actor.can(Permission.CONTENT_REVIEW)):
        raise ContentError("may_not_comment")
    if not body.strip():
        raise ContentError("comment_missing")
    version = _version(version_id)
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="comment", body=body.strip()))
    audit.record(actor, "content.commented", f"version:{version.id}")
    db.session.commit()


def _review_target(actor: User, version_id: int) -> AssetVersion:
    if not actor.can(Permission.CONTENT_REVIEW):
        raise ContentError("may_not_review")
    version = _version(version_id)
    if version.status != VersionStatus.IN_REVIEW:
        raise ContentError("not_in_review")
    return version


def _version(version_id: int) -> AssetVersion:
    version = db.session.get(AssetVersion, version_id)
    if version is None:
        raise ContentError("no_such_version")
    return version


# --- reading ----------------------------------------------------------------------------------


def visible_asset(actor: User, asset_id: int) -> Asset:
    """Analysts (view only) see approved content only."""
    asset = db.session.get(Asset, asset_id)
    if asset is None or (not _sees_drafts(actor) and asset.approved is None):
        raise ContentError("no_such_content")
    return asset


def _sees_drafts(actor: User) -> bool:
    return actor.can(Permission.CONTENT_EDIT) or actor.can(Permission.CONTENT_REVIEW)


def visible_versions(actor: User, asset: Asset) -> list[AssetVersion]:
    if _sees_drafts(actor):
        return list(asset.versions)
    return [v for v in asset.versions if v.status in (VersionStatus.APPROVED, VersionStatus.SUPERSEDED)]


def search_assets(
    actor: User,
    text: str = "",
    kind: str = "",
    status: str = "",
    owner_id: int | None = None,
    tag: str = "",
    page: int = 1,
    per_page: int = 20,
) -> Page:
    """Assets matching the filters, judged by the version the searcher may see: the newest
    one for people who see drafts, the approved one for everyone else (so a draft's subject
    never finds an asset for someone who may not read the draft)."""
    shown = select(AssetVersion.asset_id, func.max(AssetVersion.number).label("number"))
    if not _sees_drafts(actor):
        shown = shown.where(AssetVersion.status == VersionStatus.APPROVED)
    latest = shown.group_by(AssetVersion.asset_id).subquery()
    query = (
        select(Asset)
        .join(latest, latest.c.asset_id == Asset.id)
        .join(AssetVersion, (AssetVersion.asset_id == Asset.id) & (AssetVersion.number == latest.c.number))
        .order_by(Asset.updated_at.desc(), Asset.id.desc())
    )
    if text:
        like = f"%{text.strip()}%"
        query = query.where(or_(Asset.name.ilike(like), AssetVersion.subject.ilike(like)))
    if kind:
        query = query.where(Asset.kind == kind)
    if status:
        query = query.where(AssetVersion.status == status)
    if owner_id:
        query = query.where(Asset.owner_id == owner_id)
    if tag:
        # Tags are a JSON list; its text holds the tag as JSON writes it (escaped or not,
        # depending on the database driver).
        as_text = cast(Asset.tags, String)
        needle = tag.strip()
        query = query.where(
            or_(
                as_text.contains(json.dumps(needle), autoescape=True),
                as_text.contains(json.dumps(needle, ensure_ascii=False), autoescape=True),
            )
        )
    return paginate(query, page, per_page)


def review_queue() -> list[AssetVersion]:
    return list(
        db.session.scalars(
            select(AssetVersion)
            .where(AssetVersion.status == VersionStatus.IN_REVIEW)
            .order_by(AssetVersion.submitted_at)
        )
    )


def queue_counts() -> dict[str, int]:
    rows = db.session.execute(
        select(Asset.kind, func.count())
        .join(AssetVersion, AssetVersion.asset_id == Asset.id)
        .where(AssetVersion.status == VersionStatus.IN_REVIEW)
        .group_by(Asset.kind)
    )
    return dict(rows.all())


def review_base(version: AssetVersion) -> AssetVersion | None:
    """The version a reviewer compares against: the latest earlier one that was reviewed
    (sent back with "request changes", or approved)."""
    reviewed = (VersionStatus.RETURNED, VersionStatus.APPROVED, VersionStatus.SUPERSEDED)
    earlier = [v for v in version.asset.versions if v.number < version.number and v.status in reviewed]
    return earlier[-1] if earlier else None


def review_changes(version: AssetVersion) -> diff.ReviewDiff | None:
    """What changed since the version last reviewed, as the sample contact would read it
    (None when nothing was reviewed before). A side whose template cannot render is compared
    as its source."""
    base = review_base(version)
    if base is None:
        return None
    kind = version.asset.kind
    rendered = []
    for side in (base, version):
        fields = side.fields()
        try:
            compiled = compile_version(fields, kind)
            rendered.append({name: template.render(sample_variables()) for name, template in compiled.items()})
        except (TemplateRefused, RenderLimitExceeded):
            rendered.append(fields)
    sources = (base.fields(), version.fields())
    block_lists = None
    if base.blocks or version.blocks:
        block_lists = (blocks.block_summaries(base.blocks), blocks.block_summaries(version.blocks))
    changes = diff.review_diff(
        base.number,
        base.status,
        kind,
        (rendered[0], rendered[1]),
        sources,
        block_lists,
        field_label=lambda name: labels.label("content_field", name),
    )
    requests = [c.body for c in base.comments if c.kind == "changes_requested"]
    changes.requested = requests[-1] if requests else ""
    return changes


# --- the send pipeline's entry point ---------------------------------------------------------


@dataclass(frozen=True)
class ApprovedContent:
    version_id: int
    asset_id: int
    kind: str
    subject: str
    preheader: str
    html_body: str
    text_body: str
    sms_text: str
    wecom_format: str
    wecom_text: str
    templates: dict[str, CompiledTemplate]


def approved_version(version_id: int) -> ApprovedContent:
    """What a sender needs to build messages from a version, compiled once. Refuses anything
    that is not approved: drafts, versions in review, superseded ones are never sent."""
    version = db.session.get(AssetVersion, version_id)
    if version is None or version.status != VersionStatus.APPROVED:
        raise ContentError("not_approved")
    return ApprovedContent(
        version_id=version.id,
        asset_id=version.asset_id,
        kind=version.asset.kind,
        subject=version.subject,
        preheader=version.preheader,
        html_body=version.html_body,
        text_body=version.text_body,
        sms_text=version.sms_text,
        wecom_format=version.wecom_format,
        wecom_text=version.wecom_text,
        templates=compile_version(version, version.asset.kind),
    )


# --- word and link lists ---------------------------------------------------------------------


def list_words() -> list[ForbiddenWord]:
    return list(db.session.scalars(select(ForbiddenWord).order_by(ForbiddenWord.word)))


def list_link_rules() -> list[LinkRule]:
    return list(db.session.scalars(select(LinkRule).order_by(LinkRule.kind, LinkRule.domain)))


def add_word(actor: User, word: str, severity: str) -> None:
    word = word.strip()
    if not word or severity not in (lint.BLOCKING, lint.WARNING):
        raise ContentError("word_invalid")
    if db.session.scalar(select(ForbiddenWord).where(ForbiddenWord.word == word)):
        raise ContentError("word_exists", word=word)
    db.session.add(ForbiddenWord(word=word, severity=severity))
    audit.record(actor, "content.word_added", f"word:{word}", {"severity": severity})
    db.session.commit()


def remove_word(actor: User, word_id: int) -> None:
    word = db.session.get(ForbiddenWord, word_id)
    if word is None:
        raise ContentError("no_such_word")
    audit.record(actor, "content.word_removed", f"word:{word.word}")
    db.session.delete(word)
    db.session.commit()


def add_link_rule(actor: User, kind: str, domain: str) -> None:
    domain = domain.strip().lower().removeprefix("https://").removeprefix("http://").strip("/")
    if kind not in ("deny", "allow", "shortener") or not domain or "/" in domain:
        raise ContentError("link_rule_invalid")
    if db.session.scalar(select(LinkRule).where(LinkRule.kind == kind, LinkRule.domain == domain)):
        return
    db.session.add(LinkRule(kind=kind, domain=domain))
    audit.record(actor, "content.link_rule_added", f"domain:{domain}", {"list": kind})
    db.session.commit()


def remove_link_rule(actor: User, rule_id: int) -> None:
    rule = db.session.get(LinkRule, rule_id)
    if rule is None:
        raise ContentError("no_such_rule")
    audit.record(actor, "content.link_rule_removed", f"domain:{rule.domain}", {"list": rule.kind})
    db.session.delete(rule)
    db.session.commit()


# --- previews as real contacts ---------------------------------------------------------------


def preview_variables_for_contact(contact_id: int) -> dict[str, Any] | None:
    from portal.audience.models import Contact
    from portal.delivery.render import CONTACT_FIELDS, contact_variables

    contact = db.session.get(Contact, contact_id)
    if contact is None:
        return None
    variables = sample_variables()
    variables["contact"] = contact_variables({key: getattr(contact, key) for key in CONTACT_FIELDS})
    return variables


def recent_contacts_for_preview(limit: int = 10) -> list:
    from portal.audience.models import Contact

    return list(
        db.session.scalars(
            select(Contact)
            .where(Contact.email.is_not(None), Contact.name != "")
            .order_by(Contact.id.desc())
            .limit(limit)
        )
    )


def check_texts(version: AssetVersion) -> dict[str, str]:
    """The texts the checks' positions refer to (the HTML body as its text content)."""
    texts = version.fields()
    texts["html_body"] = "".join(lint.html_facts(version.html_body).text)
    return texts


def highlight(text: str, findings: list[dict[str, Any]], field_name: str, context: int = 30) -> list[tuple[str, bool]]:
    """The text around the findings cut into (piece, is_flagged) runs, for marking forbidden
    words where they stand; `context` characters are kept on each side."""
    spans = sorted(
        (f["start"], f["end"]) for f in findings if f.get("field") == field_name and f.get("start") is not None
    )
    pieces, position = [], 0
    for start, end in spans:
        if start < position:
            continue
        pieces.append((text[position:start], False))
        pieces.append((text[start:end], True))
        position = end
    pieces.append((text[position:], False))
    if pieces and not pieces[0][1] and len(pieces[0][0]) > context:
        pieces[0] = ("…" + pieces[0][0][-context:], False)
    if pieces and not pieces[-1][1] and len(pieces[-1][0]) > context:
        pieces[-1] = (pieces[-1][0][:context] + "…", False)
    return [p for p in pieces if p[0]]
