"""The content library's rules: versions, the review workflow, and what may be sent.

Nothing reaches a customer unapproved: an approved version never changes, editing one makes
a new draft, the author of a version can never approve it, and `approved_version` is the
only way the send pipeline gets content."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import nh3
from sqlalchemy import String, cast, func, or_, select

from portal import audit
from portal.access import Permission
from portal.auth.models import User
from portal.content import lint
from portal.content.models import Asset, AssetKind, AssetVersion, ForbiddenWord, LinkRule, ReviewComment, VersionStatus
from portal.delivery.render import CompiledTemplate, TemplateRefused, compile_template
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
    """A refused content action; the message is shown to the person."""


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
    """The plain-text part derived from the HTML: paragraphs kept, links written out."""
    facts = lint.html_facts(
        html.replace("</p>", "</p>\n\n")
        .replace("<br>", "\n")
        .replace("<br/>", "\n")
        .replace("</li>", "\n")
        .replace("</h1>", "\n\n")
        .replace("</h2>", "\n\n")
        .replace("</tr>", "\n")
    )
    text = "".join(facts.text)
    lines = [line.strip() for line in text.splitlines()]
    collapsed: list[str] = []
    for line in lines:
        if line or (collapsed and collapsed[-1]):
            collapsed.append(line)
    return "\n".join(collapsed).strip()


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
            raise TemplateRefused(f"{name}: {exc.reason}", exc.line) from exc
    return compiled


def _check_can_edit(actor: User) -> None:
    if not actor.can(Permission.CONTENT_EDIT):
        raise ContentError("You may not edit content.")


def create_asset(actor: User, kind: str, name: str, tags: list[str] | None = None) -> Asset:
    _check_can_edit(actor)
    if kind not in set(AssetKind):
        raise ContentError("Unknown content kind.")
    if not name.strip():
        raise ContentError("Give the content a name.")
    asset = Asset(kind=kind, name=name.strip(), owner_id=actor.id, tags=_clean_tags(tags))
    db.session.add(asset)
    db.session.flush()
    db.session.add(AssetVersion(asset_id=asset.id, number=1, author_id=actor.id))
    audit.record(actor, "content.created", f"asset:{asset.id}", {"kind": kind, "name": asset.name})
    db.session.commit()
    return asset


def _clean_tags(tags: list[str] | None) -> list[str]:
    return sorted({t.strip() for t in (tags or []) if t.strip()})


def save_draft(actor: User, version_id: int, values: dict[str, Any]) -> AssetVersion:
    """Save a draft's fields. Author HTML is sanitised; templates that do not compile or name
    unknown variables are refused with their line, and nothing is saved."""
    _check_can_edit(actor)
    version = _version(version_id)
    if version.status != VersionStatus.DRAFT:
        raise ContentError("Only a draft can be edited; an approved version never changes.")
    kind = version.asset.kind
    new = version.fields()
    if kind == AssetKind.EMAIL:
        new["subject"] = str(values.get("subject", "")).replace("\r", " ").replace("\n", " ").strip()
        new["preheader"] = str(values.get("preheader", "")).strip()
        new["html_body"] = sanitise_html(str(values.get("html_body", "")))
        by_hand = bool(values.get("text_written_by_hand"))
        new["text_body"] = str(values.get("text_body", "")) if by_hand else text_from_html(new["html_body"])
        version.text_written_by_hand = by_hand
    elif kind == AssetKind.SMS:
        new["sms_text"] = str(values.get("sms_text", "")).strip()
    else:
        new["wecom_text"] = str(values.get("wecom_text", "")).strip()
        version.wecom_format = "markdown" if values.get("wecom_format") == "markdown" else "text"
    compile_version(new, kind)  # raises TemplateRefused before anything changes
    for key, value in new.items():
        setattr(version, key, value)
    if "name" in values and str(values["name"]).strip():
        version.asset.name = str(values["name"]).strip()
    if "tags" in values:
        version.asset.tags = _clean_tags(values["tags"])
    audit.record(actor, "content.draft_saved", f"version:{version.id}", {"asset": version.asset_id})
    db.session.commit()
    return version


def new_draft_from(actor: User, asset_id: int) -> AssetVersion:
    """Start the next version from the newest one; an asset has at most one open version."""
    _check_can_edit(actor)
    asset = db.session.get(Asset, asset_id)
    if asset is None:
        raise ContentError("No such content.")
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
        sms_text=latest.sms_text,
        wecom_format=latest.wecom_format,
        wecom_text=latest.wecom_text,
    )
    db.session.add(draft)
    db.session.flush()
    audit.record(actor, "content.new_version", f"version:{draft.id}", {"asset": asset.id, "from": latest.id})
    db.session.commit()
    return draft


def run_checks(version: AssetVersion) -> list[lint.Finding]:
    words = [(w.word, w.severity) for w in db.session.scalars(select(ForbiddenWord))]
    rules = lint.LinkRules()
    for rule in db.session.scalars(select(LinkRule)):
        {"deny": rules.deny_domains, "allow": rules.allow_domains, "shortener": rules.shortener_domains}[
            rule.kind
        ].append(rule.domain)
    from flask import current_app

    return lint.check_version(
        version.asset.kind, version.fields(), words, rules, current_app.config["SMS_OPT_OUT_TEXT"]
    )


def submit_for_review(actor: User, version_id: int) -> list[lint.Finding]:
    """Run the checks; with no blocking finding, put the version in review and tell the
    reviewers. Returns the findings either way (blocking ones raise)."""
    _check_can_edit(actor)
    version = _version(version_id)
    if version.status != VersionStatus.DRAFT:
        raise ContentError("Only a draft can be submitted.")
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
        f"待审核：{version.asset.name} v{version.number}",
        f"/content/{version.asset_id}",
    )
    db.session.commit()
    return findings


class ChecksFailed(ContentError):
    def __init__(self, findings: list[lint.Finding]):
        super().__init__("Blocking problems must be fixed before review.")
        self.findings = findings


def _reviewer_ids(exclude: int) -> list[int]:
    users = db.session.scalars(select(User).where(User.active.is_(True)))
    return [u.id for u in users if u.id != exclude and u.can(Permission.CONTENT_REVIEW)]


def withdraw(actor: User, version_id: int) -> None:
    version = _version(version_id)
    if version.status != VersionStatus.IN_REVIEW:
        raise ContentError("Only a version in review can be withdrawn.")
    if version.author_id != actor.id:
        raise ContentError("Only the author can withdraw a version from review.")
    version.status = VersionStatus.DRAFT
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="withdrawn"))
    audit.record(actor, "content.withdrawn", f"version:{version.id}")
    db.session.commit()


def approve(actor: User, version_id: int, comment: str = "") -> None:
    """Approve a version in review. The author can never approve their own version,
    whatever roles they hold."""
    version = _review_target(actor, version_id)
    if version.author_id == actor.id:
        raise ContentError("The author of a version cannot approve it; another reviewer must.")
    for previous in version.asset.versions:
        if previous.status == VersionStatus.APPROVED:
            previous.status = VersionStatus.SUPERSEDED
    version.status = VersionStatus.APPROVED
    version.decided_at = utcnow()
    version.decided_by_id = actor.id
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="approved", body=comment.strip()))
    audit.record(actor, "content.approved", f"version:{version.id}", {"asset": version.asset_id})
    if version.author_id:
        notify([version.author_id], f"已批准：{version.asset.name} v{version.number}", f"/content/{version.asset_id}")
    db.session.commit()


def request_changes(actor: User, version_id: int, comment: str) -> None:
    version = _review_target(actor, version_id)
    if not comment.strip():
        raise ContentError("Say what needs to change.")
    version.status = VersionStatus.DRAFT
    version.decided_at = utcnow()
    version.decided_by_id = actor.id
    db.session.add(
        ReviewComment(version_id=version.id, author_id=actor.id, kind="changes_requested", body=comment.strip())
    )
    audit.record(actor, "content.changes_requested", f"version:{version.id}", {"asset": version.asset_id})
    if version.author_id:
        notify([version.author_id], f"需修改：{version.asset.name} v{version.number}", f"/content/{version.asset_id}")
    db.session.commit()


def add_comment(actor: User, version_id: int, body: str) -> None:
    if not (actor.can(Permission.CONTENT_EDIT) or actor.can(Permission.CONTENT_REVIEW)):
        raise ContentError("You may not comment on content.")
    if not body.strip():
        raise ContentError("Write a comment first.")
    version = _version(version_id)
    db.session.add(ReviewComment(version_id=version.id, author_id=actor.id, kind="comment", body=body.strip()))
    audit.record(actor, "content.commented", f"version:{version.id}")
    db.session.commit()


def _review_target(actor: User, version_id: int) -> AssetVersion:
    if not actor.can(Permission.CONTENT_REVIEW):
        raise ContentError("You may not review content.")
    version = _version(version_id)
    if version.status != VersionStatus.IN_REVIEW:
        raise ContentError("This version is not waiting for review.")
    return version


def _version(version_id: int) -> AssetVersion:
    version = db.session.get(AssetVersion, version_id)
    if version is None:
        raise ContentError("No such version.")
    return version


# --- reading ----------------------------------------------------------------------------------


def visible_asset(actor: User, asset_id: int) -> Asset:
    """Analysts (view only) see approved content only."""
    asset = db.session.get(Asset, asset_id)
    if asset is None or (not _sees_drafts(actor) and asset.approved is None):
        raise ContentError("No such content.")
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
    latest = (
        select(AssetVersion.asset_id, func.max(AssetVersion.number).label("number"))
        .group_by(AssetVersion.asset_id)
        .subquery()
    )
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
    if not _sees_drafts(actor):
        approved = select(AssetVersion.asset_id).where(AssetVersion.status == VersionStatus.APPROVED)
        query = query.where(Asset.id.in_(approved))
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


def diff_against_approved(version: AssetVersion) -> str | None:
    """Side-by-side HTML diff of the version against the last approved one (None if none)."""
    approved = [
        v
        for v in version.asset.versions
        if v.id != version.id
        and v.status in (VersionStatus.APPROVED, VersionStatus.SUPERSEDED)
        and v.number < version.number
    ]
    if not approved:
        return None
    base = approved[-1]

    def lines(v: AssetVersion) -> list[str]:
        out = []
        for name, value in v.fields().items():
            if value:
                out.append(f"[{name}]")
                out.extend(value.splitlines())
        return out

    return difflib.HtmlDiff(wrapcolumn=70).make_table(
        lines(base), lines(version), f"v{base.number}", f"v{version.number}", context=True, numlines=2
    )


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
        raise ContentError("Only approved content can be sent.")
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
        raise ContentError("Give a word and whether it blocks or warns.")
    if db.session.scalar(select(ForbiddenWord).where(ForbiddenWord.word == word)):
        raise ContentError("That word is on the list already.")
    db.session.add(ForbiddenWord(word=word, severity=severity))
    audit.record(actor, "content.word_added", f"word:{word}", {"severity": severity})
    db.session.commit()


def remove_word(actor: User, word_id: int) -> None:
    word = db.session.get(ForbiddenWord, word_id)
    if word is None:
        raise ContentError("No such word.")
    audit.record(actor, "content.word_removed", f"word:{word.word}")
    db.session.delete(word)
    db.session.commit()


def add_link_rule(actor: User, kind: str, domain: str) -> None:
    domain = domain.strip().lower().removeprefix("https://").removeprefix("http://").strip("/")
    if kind not in ("deny", "allow", "shortener") or not domain or "/" in domain:
        raise ContentError("Give a domain name (example.com) and a list.")
    if db.session.scalar(select(LinkRule).where(LinkRule.kind == kind, LinkRule.domain == domain)):
        return
    db.session.add(LinkRule(kind=kind, domain=domain))
    audit.record(actor, "content.link_rule_added", f"domain:{domain}", {"list": kind})
    db.session.commit()


def remove_link_rule(actor: User, rule_id: int) -> None:
    rule = db.session.get(LinkRule, rule_id)
    if rule is None:
        raise ContentError("No such rule.")
    audit.record(actor, "content.link_rule_removed", f"domain:{rule.domain}", {"list": rule.kind})
    db.session.delete(rule)
    db.session.commit()


# --- previews as real contacts ---------------------------------------------------------------


def preview_variables_for_contact(contact_id: int) -> dict[str, Any] | None:
    from portal.audience.models import Contact
    from portal.delivery.render import CONTACT_FIELDS, contact_variables, sample_variables

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
