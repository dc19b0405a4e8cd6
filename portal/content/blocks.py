"""The block editor's document: sections of 1–3 columns holding blocks, rendered to email-safe,
responsive, table-based HTML through MJML (MRML, its Rust port), and to a plain-text part.

A document is plain data (stored as JSON on the version):

    {"sections": [{"id": "s1", "columns": 2, "background": "#ffffff",
                   "blocks": [{"id": "b1", "kind": "heading", "column": 0, "text": "…", …}]}]}

Personalisation variables (`{{ contact.name | default("客户") }}`) are kept out of MJML's and
the sanitiser's way: every `{{ … }}` and `{% … %}` is swapped for a placeholder before the
author's text is escaped, and put back afterwards, so the rendered HTML is a template for the
same sandbox as hand-written HTML, which escapes the contact's data when it renders."""

from __future__ import annotations

import copy
import re
import secrets
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from typing import Any

import nh3
from mjml import mjml2html

BLOCK_KINDS = ("heading", "text", "image", "button", "divider", "spacer", "social", "footer", "html")
ALIGNMENTS = ("left", "center", "right")
MAX_COLUMNS = 3
MAX_BLOCKS = 200
JINJA_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
SAFE_URL = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)
# What a text block's rich text may hold: the editor's bold, italic, links and lists.
RICH_TEXT_TAGS = {"p", "br", "b", "strong", "i", "em", "u", "a", "ul", "ol", "li", "div", "span"}
RICH_TEXT_ATTRIBUTES = {"a": {"href"}}
FONT = "'PingFang SC', 'Microsoft YaHei', 'Hiragino Sans GB', Helvetica, Arial, sans-serif"

# The settings each kind keeps, with their defaults (anything else posted is dropped).
DEFAULTS: dict[str, dict[str, Any]] = {
    "heading": {"text": "标题", "level": "1", "align": "left", "color": "#1f2d3d", "padding": 10},
    "text": {"html": "<p>正文</p>", "align": "left", "color": "#333333", "padding": 10},
    "image": {"src": "", "alt": "", "href": "", "width": 600, "align": "center", "padding": 10},
    "button": {
        "text": "了解更多",
        "href": "https://",
        "align": "center",
        "background": "#1a73e8",
        "color": "#ffffff",
        "padding": 10,
    },
    "divider": {"color": "#dddddd", "padding": 10},
    "spacer": {"height": 20},
    "social": {
        "links": "微博 https://weibo.com/\n微信公众号 https://mp.weixin.qq.com/",
        "align": "center",
        "padding": 10,
    },
    "footer": {
        "address": "{{ sender.company }}",
        "unsubscribe_text": "退订",
        "align": "center",
        "color": "#888888",
        "padding": 10,
    },
    "html": {"html": "", "padding": 0},
}
NUMBER_LIMITS = {"padding": (0, 80), "width": (20, 600), "height": (0, 200)}


class BlocksRefused(ValueError):
    """A document that is not a block document (wrong shape, too many blocks)."""

    def __init__(self, code: str, **params: Any):
        super().__init__(code)
        self.code, self.params = code, params


def new_id() -> str:
    return secrets.token_hex(4)


def new_block(kind: str, column: int = 0) -> dict[str, Any]:
    if kind not in BLOCK_KINDS:
        raise BlocksRefused("unknown_block", kind=kind)
    return {"id": new_id(), "kind": kind, "column": column, **copy.deepcopy(DEFAULTS[kind])}


def new_section(columns: int = 1) -> dict[str, Any]:
    return {"id": new_id(), "columns": max(1, min(MAX_COLUMNS, columns)), "background": "#ffffff", "blocks": []}


def starter_document() -> dict[str, Any]:
    """What a new email starts with: a heading, a paragraph, a button and the footer."""
    section = new_section(1)
    section["blocks"] = [new_block("heading"), new_block("text"), new_block("button")]
    footer = new_section(1)
    footer["blocks"] = [new_block("footer")]
    return {"sections": [section, footer]}


def _number(name: str, value: Any, default: int) -> int:
    low, high = NUMBER_LIMITS.get(name, (0, 1000))
    try:
        return max(low, min(high, int(str(value).strip() or default)))
    except ValueError:
        return default


def clean_block(raw: dict[str, Any], columns: int) -> dict[str, Any]:
    """A block as the renderer may trust it: known settings, bounded numbers, colours and
    alignments from their lists, rich text sanitised."""
    kind = raw.get("kind")
    if kind not in BLOCK_KINDS:
        raise BlocksRefused("unknown_block", kind=str(kind))
    block: dict[str, Any] = {"id": str(raw.get("id") or new_id())[:16], "kind": kind}
    block["column"] = _number("column", raw.get("column", 0), 0) if columns > 1 else 0
    block["column"] = min(block["column"], columns - 1)
    for name, default in DEFAULTS[kind].items():
        value = raw.get(name, default)
        if isinstance(default, int):
            value = _number(name, value, default)
        elif name in ("color", "background"):
            value = value if isinstance(value, str) and COLOUR.match(value) else default
        elif name == "align":
            value = value if value in ALIGNMENTS else default
        elif name == "level":
            value = value if value in ("1", "2", "3") else default
        else:
            value = str(value if value is not None else "")
        block[name] = value
    if kind == "text":
        block["html"] = sanitise_rich_text(block["html"])
    elif kind == "html":
        from portal.content.service import ALLOWED_ATTRIBUTES, ALLOWED_TAGS  # the whole-message HTML rules

        block["html"] = _sanitise_keeping_jinja(block["html"], ALLOWED_TAGS, ALLOWED_ATTRIBUTES)
    return block


def clean_document(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("sections"), list):
        raise BlocksRefused("not_a_document")
    sections, count = [], 0
    for raw_section in raw["sections"]:
        if not isinstance(raw_section, dict):
            raise BlocksRefused("not_a_document")
        columns = _number("columns", raw_section.get("columns", 1), 1)
        columns = max(1, min(MAX_COLUMNS, columns))
        background = raw_section.get("background", "#ffffff")
        section = {
            "id": str(raw_section.get("id") or new_id())[:16],
            "columns": columns,
            "background": background if isinstance(background, str) and COLOUR.match(background) else "#ffffff",
            "blocks": [clean_block(b, columns) for b in raw_section.get("blocks") or [] if isinstance(b, dict)],
        }
        count += len(section["blocks"])
        sections.append(section)
    if count > MAX_BLOCKS:
        raise BlocksRefused("too_many_blocks", limit=MAX_BLOCKS)
    return {"sections": sections}


def _protect_jinja(text: str, saved: list[str], nonce: str) -> str:
    """Swap template tags for placeholders MJML and the sanitiser leave alone."""

    def swap(match: re.Match) -> str:
        saved.append(match.group(0))
        return f"JJ{nonce}X{len(saved) - 1}XJJ"

    return JINJA_TAG.sub(swap, text)


def _restore_jinja(html: str, saved: list[str], nonce: str) -> str:
    return re.sub(rf"JJ{nonce}X(\d+)XJJ", lambda m: saved[int(m.group(1))], html)


def sanitise_rich_text(html: str) -> str:
    return _sanitise_keeping_jinja(html, RICH_TEXT_TAGS, RICH_TEXT_ATTRIBUTES)


def _sanitise_keeping_jinja(html: str, tags: set[str], attributes: dict[str, set[str]]) -> str:
    """Scripts, handlers and javascript: links never survive; variables do, untouched."""
    saved: list[str] = []
    nonce = secrets.token_hex(3)
    cleaned = nh3.clean(
        _protect_jinja(html, saved, nonce),
        tags=tags,
        attributes=attributes,
        url_schemes={"http", "https", "mailto"},
        link_rel=None,
        strip_comments=True,
    )
    return _restore_jinja(cleaned, saved, nonce)


def _url(value: str) -> str:
    """Only http(s)/mailto links or a variable (unsubscribe_url, view_in_browser_url) go out."""
    value = value.strip()
    return value if SAFE_URL.match(value) or value.startswith("{{") else ""


@dataclass
class _Renderer:
    saved: list[str] = field(default_factory=list)
    nonce: str = field(default_factory=lambda: secrets.token_hex(3))

    def text(self, value: str) -> str:
        """Author text for element content or an attribute: escaped, variables kept."""
        return escape(_protect_jinja(value, self.saved, self.nonce), quote=True)

    def markup(self, value: str) -> str:
        """Already sanitised markup: only its variables are protected."""
        return _protect_jinja(value, self.saved, self.nonce)

    def block(self, block: dict[str, Any]) -> str:
        kind, pad = block["kind"], f'padding="{block.get("padding", 0)}px 25px"'
        text_style = f'font-family="{FONT}" font-size="15px" line-height="1.6"'
        if kind == "heading":
            size = {"1": "26px", "2": "21px", "3": "17px"}[block["level"]]
            return (
                f'<mj-text align="{block["align"]}" color="{block["color"]}" {pad} font-family="{FONT}">'
                f'<h{block["level"]} style="margin:0;font-size:{size};line-height:1.3;">'
                f"{self.text(block['text'])}</h{block['level']}></mj-text>"
            )
        if kind == "text":
            return (
                f'<mj-text align="{block["align"]}" color="{block["color"]}" {pad} {text_style}>'
                f"{self.markup(block['html'])}</mj-text>"
            )
        if kind == "image":
            if not _url(block["src"]):
                return ""
            href = f' href="{self.text(_url(block["href"]))}"' if _url(block["href"]) else ""
            return (
                f'<mj-image src="{self.text(_url(block["src"]))}" alt="{self.text(block["alt"])}"{href} '
                f'width="{block["width"]}px" align="{block["align"]}" {pad} />'
            )
        if kind == "button":
            return (
                f'<mj-button href="{self.text(_url(block["href"]))}" align="{block["align"]}" '
                f'background-color="{block["background"]}" color="{block["color"]}" {pad} '
                f'font-family="{FONT}" font-size="15px" border-radius="4px">{self.text(block["text"])}</mj-button>'
            )
        if kind == "divider":
            return f'<mj-divider border-color="{block["color"]}" border-width="1px" {pad} />'
        if kind == "spacer":
            return f'<mj-spacer height="{block["height"]}px" />'
        if kind == "social":
            links = " · ".join(
                f'<a href="{self.text(url)}" style="color:#1a73e8;text-decoration:none;">{self.text(label)}</a>'
                for label, url in social_links(block["links"])
            )
            return f'<mj-text align="{block["align"]}" {pad} {text_style}>{links}</mj-text>'
        if kind == "footer":
            return (
                f'<mj-text align="{block["align"]}" color="{block["color"]}" {pad} font-family="{FONT}" '
                f'font-size="12px" line-height="1.6">{self.text(block["address"])}<br />'
                f'<a href="{self.markup("{{ unsubscribe_url }}")}" style="color:{block["color"]};">'
                f"{self.text(block['unsubscribe_text'] or '退订')}</a></mj-text>"
            )
        # kind == "html": an expert's markup, sanitised when the block was cleaned
        return f"<mj-text {pad}>{self.markup(block['html'])}</mj-text>"

    def document(self, document: dict[str, Any], preheader: str) -> str:
        sections = []
        for section in document["sections"]:
            columns = []
            for index in range(section["columns"]):
                inner = "".join(self.block(b) for b in section["blocks"] if b["column"] == index)
                columns.append(f"<mj-column>{inner}</mj-column>")
            sections.append(f'<mj-section background-color="{section["background"]}">{"".join(columns)}</mj-section>')
        head = f"<mj-head><mj-preview>{self.text(preheader)}</mj-preview></mj-head>" if preheader else ""
        source = f'<mjml lang="zh-CN">{head}<mj-body background-color="#f4f5f7">{"".join(sections)}</mj-body></mjml>'
        return _restore_jinja(mjml2html(source), self.saved, self.nonce)


def social_links(raw: str) -> list[tuple[str, str]]:
    """ "label URL" per line; lines without a safe URL are left out."""
    links = []
    for line in raw.splitlines():
        label, _, url = line.strip().rpartition(" ")
        if _url(url) and label.strip():
            links.append((label.strip(), url))
    return links


def render_html(document: dict[str, Any], preheader: str = "") -> str:
    """The email's HTML (a template for the sandbox) from a cleaned document."""
    return _Renderer().document(document, preheader)


class _TextWriter(HTMLParser):
    """Plain text from the editor's markup: paragraphs and list items on their own lines,
    every link written out as `文字 (https://…)`."""

    BREAKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "ul", "ol", "table", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href: str | None = None
        self.link_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.href, self.link_text = dict(attrs).get("href") or "", []
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self.BREAKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag == "a" and self.href is not None:
            text = "".join(self.link_text).strip()
            self.parts.append(f"{text} ({self.href})" if text and text != self.href else self.href)
            self.href = None
        elif tag in self.BREAKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        (self.link_text if self.href is not None else self.parts).append(data)


def html_to_text(html: str) -> str:
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    lines = [" ".join(line.split()) for line in "".join(writer.parts).splitlines()]
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    return "\n".join(kept).strip()


def render_text(document: dict[str, Any]) -> str:
    """The plain-text part, block by block, with every link's URL."""
    parts = []
    for section in document["sections"]:
        for block in sorted(section["blocks"], key=lambda b: b["column"]):
            kind = block["kind"]
            if kind == "heading":
                parts.append(block["text"])
            elif kind in ("text", "html"):
                parts.append(html_to_text(block["html"]))
            elif kind == "image" and block["alt"]:
                parts.append(f"[{block['alt']}]" + (f" ({block['href']})" if _url(block["href"]) else ""))
            elif kind == "button" and _url(block["href"]):
                parts.append(f"{block['text']} ({block['href']})")
            elif kind == "divider":
                parts.append("-" * 20)
            elif kind == "social":
                parts.append("\n".join(f"{label} ({url})" for label, url in social_links(block["links"])))
            elif kind == "footer":
                parts.append(f"{block['address']}\n{block['unsubscribe_text'] or '退订'} ({{{{ unsubscribe_url }}}})")
    return "\n\n".join(p for p in parts if p.strip())


def image_urls(document: dict[str, Any]) -> list[str]:
    return [b["src"] for s in document["sections"] for b in s["blocks"] if b["kind"] == "image" and b["src"]]


def block_summaries(document: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(block id, kind, what it says) in reading order, for the reviewers' diff."""
    if not document:
        return []
    rows = []
    for section in document["sections"]:
        for block in sorted(section["blocks"], key=lambda b: b["column"]):
            kind = block["kind"]
            if kind == "heading" or kind == "button":
                said = block["text"] + (f" → {block['href']}" if kind == "button" else "")
            elif kind in ("text", "html"):
                said = html_to_text(block["html"])
            elif kind == "image":
                said = f"{block['src']} · {block['alt']}"
            elif kind == "social":
                said = block["links"]
            elif kind == "footer":
                said = block["address"]
            elif kind == "spacer":
                said = f"{block['height']}px"
            else:
                said = ""
            rows.append((block["id"], kind, said))
    return rows


# --- the editor's form and its operations ------------------------------------------------------


def document_from_form(form: Any) -> dict[str, Any]:
    """The document as the editor's form posts it: `s.<section>.<setting>` and
    `b.<block>.<setting>` fields, sections and blocks in the order the page shows them
    (dragging a block moves its fields and rewrites its section and column)."""
    sections: dict[str, dict[str, Any]] = {}
    found_blocks: dict[str, dict[str, Any]] = {}
    for key in form:
        prefix, _, rest = key.partition(".")
        item_id, _, name = rest.partition(".")
        if not item_id or not name:
            continue
        if prefix == "s":
            sections.setdefault(item_id, {"id": item_id, "blocks": []})[name] = form.get(key)
        elif prefix == "b":
            found_blocks.setdefault(item_id, {"id": item_id})[name] = form.get(key)
    for block in found_blocks.values():
        section = sections.get(str(block.pop("section", "")))
        if section is not None:
            section["blocks"].append(block)
    return clean_document({"sections": list(sections.values())})


def apply_operation(document: dict[str, Any], operation: str, kind: str = "") -> dict[str, Any]:
    """One editing step, named by the button that asked for it:
    `add:<section>:<column>` (with `kind`), `duplicate:<block>`, `delete:<block>`,
    `section:<columns>`, `section-up:<section>`, `section-down:<section>`, `section-delete:<section>`.
    An operation on something no longer there changes nothing."""
    document = copy.deepcopy(document)
    sections = document["sections"]
    verb, _, target = operation.partition(":")
    if verb == "add":
        section_id, _, column = target.partition(":")
        for section in sections:
            if section["id"] == section_id:
                section["blocks"].append(new_block(kind, min(int(column or 0), section["columns"] - 1)))
    elif verb == "section" and target.isdigit():
        sections.append(new_section(int(target)))
    elif verb in ("section-up", "section-down", "section-delete"):
        index = next((i for i, s in enumerate(sections) if s["id"] == target), None)
        if index is not None:
            if verb == "section-delete":
                sections.pop(index)
            else:
                other = index - 1 if verb == "section-up" else index + 1
                if 0 <= other < len(sections):
                    sections[index], sections[other] = sections[other], sections[index]
    elif verb in ("duplicate", "delete"):
        for section in sections:
            for index, block in enumerate(section["blocks"]):
                if block["id"] == target:
                    if verb == "delete":
                        section["blocks"].pop(index)
                    else:
                        section["blocks"].insert(index + 1, {**copy.deepcopy(block), "id": new_id()})
                    break
    else:
        raise BlocksRefused("unknown_operation")
    return clean_document(document)


def document_from_html(html: str) -> dict[str, Any]:
    """A hand-written message moved into the block editor: its HTML as one HTML block, then
    the footer (which brings the unsubscribe link)."""
    body = new_section(1)
    body["blocks"] = [{**new_block("html"), "html": html}]
    footer = new_section(1)
    footer["blocks"] = [new_block("footer")]
    return clean_document({"sections": [body, footer]})
