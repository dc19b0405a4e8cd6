"""What changed between two versions, in a form a reviewer can read.

The rendered message (as the sample contact sees it) is compared block by block (paragraphs,
headings, list items, table rows), and changed blocks word by word: English by words, Chinese,
which has no spaces, character by character, cleaned up (diff-match-patch's semantic clean-up)
so that changes read as phrases rather than scattered letters.
Images and links (buttons) are listed side by side; the source difference is kept for experts."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from diff_match_patch import diff_match_patch

# Words in alphabets that space their words, numbers, runs of spaces; anything else (a Chinese
# character, a punctuation mark) is a token by itself.
_TOKEN = re.compile(r"[A-Za-z0-9\u00C0-\u024F_'’-]+|\s+|.", re.DOTALL)
_BLOCK_TAGS = {
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "tr",
    "table",
    "blockquote",
    "pre",
    "hr",
    "br",
    "ul",
    "ol",
    "center",
}
SAME, ADDED, REMOVED, CHANGED = "same", "added", "removed", "changed"


@dataclass(frozen=True)
class Piece:
    """A run of text: unchanged, added or removed."""

    text: str
    change: str = SAME


@dataclass
class Block:
    """A paragraph-like block of the message: unchanged, added, removed, or changed (its
    pieces then mark the words)."""

    change: str
    pieces: list[Piece]


@dataclass
class Element:
    """An image (its address and alt text) or a link (its text and address)."""

    label: str
    target: str


@dataclass
class Side:
    before: list[Element]
    after: list[Element]

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass
class FieldChange:
    name: str
    pieces: list[Piece]

    @property
    def changed(self) -> bool:
        return any(p.change != SAME for p in self.pieces)


MOVED = "moved"


@dataclass(frozen=True)
class BlockChange:
    """One block of the editor, compared by its identity: what kind it is and what it says,
    before and after."""

    change: str  # same | added | removed | changed | moved
    kind: str
    before: str
    after: str


def compare_block_documents(before: list[tuple[str, str, str]], after: list[tuple[str, str, str]]) -> list[BlockChange]:
    """(block id, kind, what it says) lists in reading order -> the changes, in the new order,
    removed blocks last. A block whose text is the same but which now stands elsewhere is moved."""
    old = {block_id: said for block_id, _, said in before}
    after_ids = [block_id for block_id, _, _ in after]
    common_before = [block_id for block_id, _, _ in before if block_id in set(after_ids)]
    common_after = [block_id for block_id in after_ids if block_id in old]
    # Blocks outside the longest run of common order are the ones that moved.
    matcher = difflib.SequenceMatcher(a=common_before, b=common_after, autojunk=False)
    in_place = {common_after[m.b + i] for m in matcher.get_matching_blocks() for i in range(m.size)}
    changes = []
    for block_id, kind, said in after:
        if block_id not in old:
            changes.append(BlockChange(ADDED, kind, "", said))
        elif old[block_id] != said:
            changes.append(BlockChange(CHANGED, kind, old[block_id], said))
        else:
            changes.append(BlockChange(SAME if block_id in in_place else MOVED, kind, said, said))
    changes += [
        BlockChange(REMOVED, kind, said, "")
        for block_id, kind, said in before
        if block_id not in old.keys() & set(after_ids)
    ]
    return changes


@dataclass
class ReviewDiff:
    base_number: int
    base_status: str
    # What the reviewer asked for when the base version was sent back.
    requested: str = ""
    fields: list[FieldChange] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    images: Side = field(default_factory=lambda: Side([], []))
    links: Side = field(default_factory=lambda: Side([], []))
    source: list[tuple[str, str]] = field(default_factory=list)
    # For block documents: which blocks were added, removed, edited or moved.
    block_changes: list[BlockChange] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            any(b.change != SAME for b in self.block_changes)
            or any(f.changed for f in self.fields)
            or any(b.change != SAME for b in self.blocks)
            or self.images.changed
            or self.links.changed
        )


def inline(before: str, after: str) -> list[Piece]:
    """`before` and `after` as one run of pieces, the removed and added words marked."""
    tokens: dict[str, str] = {}

    def encode(text: str) -> str:
        # Each distinct token becomes one private-use character, so the character diff below
        # compares whole words (the same trick diff-match-patch uses for lines).
        return "".join(tokens.setdefault(t, chr(0xF0000 + len(tokens))) for t in _TOKEN.findall(text))

    encoded_before, encoded_after = encode(before), encode(after)
    decode = {code: token for token, code in tokens.items()}
    matcher = diff_match_patch()
    matcher.Diff_Timeout = 0.2
    diffs = matcher.diff_main(encoded_before, encoded_after, False)
    matcher.diff_cleanupSemantic(diffs)
    kinds = {0: SAME, 1: ADDED, -1: REMOVED}
    return [Piece("".join(decode[c] for c in text), kinds[op]) for op, text in diffs if text]


class _Blocks(HTMLParser):
    """The text blocks, images and links of a rendered HTML message."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.images: list[Element] = []
        self.links: list[Element] = []
        self._text: list[str] = []
        self._link: tuple[str, list[str]] | None = None

    def _end_block(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.blocks.append(text)
        self._text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in _BLOCK_TAGS:
            self._end_block()
        elif tag == "img":
            self.images.append(Element(values.get("alt") or "", values.get("src") or ""))
        elif tag == "a":
            self._link = (values.get("href") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self._end_block()
        elif tag == "a" and self._link is not None:
            href, text = self._link
            self.links.append(Element(" ".join("".join(text).split()), href))
            self._link = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def close(self) -> None:
        super().close()
        self._end_block()


def html_parts(html: str) -> _Blocks:
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    return parser


def compare_blocks(before: list[str], after: list[str]) -> list[Block]:
    """Align the blocks of two messages; a replaced block is compared word by word when the
    two still look alike, else shown as removed and added."""
    result: list[Block] = []
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, b1, b2, a1, a2 in matcher.get_opcodes():
        if op == "equal":
            result.extend(Block(SAME, [Piece(text)]) for text in before[b1:b2])
            continue
        old, new = before[b1:b2], after[a1:a2]
        paired = min(len(old), len(new)) if op == "replace" else 0
        for old_text, new_text in zip(old[:paired], new[:paired], strict=True):
            if difflib.SequenceMatcher(None, old_text, new_text, autojunk=False).quick_ratio() >= 0.4:
                result.append(Block(CHANGED, inline(old_text, new_text)))
            else:
                result.append(Block(REMOVED, [Piece(old_text, REMOVED)]))
                result.append(Block(ADDED, [Piece(new_text, ADDED)]))
        result.extend(Block(REMOVED, [Piece(text, REMOVED)]) for text in old[paired:])
        result.extend(Block(ADDED, [Piece(text, ADDED)]) for text in new[paired:])
    return result


def source_lines(fields: dict[str, str], field_label: Callable[[str], str] = str) -> list[str]:
    lines = []
    for name, value in fields.items():
        if value:
            lines.append(f"[{field_label(name)}]")
            lines.extend(value.splitlines())
    return lines


def review_diff(
    base_number: int,
    base_status: str,
    kind: str,
    rendered: tuple[dict[str, str], dict[str, str]],
    sources: tuple[dict[str, Any], dict[str, Any]],
    block_lists: tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]] | None = None,
    field_label: Callable[[str], str] = str,
) -> ReviewDiff:
    """Compare two versions from their rendered fields (before, after) and their sources.
    With block documents (`block_lists`, from blocks.block_summaries), the blocks are compared
    by identity instead of the generated HTML source, which no reviewer could read."""
    before, after = rendered
    diff = ReviewDiff(base_number, base_status)
    names = {"email": ("subject", "preheader"), "sms": ("sms_text",), "wecom": ("wecom_text",)}[kind]
    for name in names:
        if before.get(name) or after.get(name):
            diff.fields.append(FieldChange(name, inline(before.get(name, ""), after.get(name, ""))))
    if kind == "email":
        old, new = html_parts(before.get("html_body", "")), html_parts(after.get("html_body", ""))
        diff.blocks = compare_blocks(old.blocks, new.blocks)
        diff.images = Side(old.images, new.images)
        diff.links = Side(old.links, new.links)
    if block_lists is not None:
        diff.block_changes = compare_block_documents(*block_lists)
        sources = tuple({k: v for k, v in side.items() if k not in ("html_body", "text_body")} for side in sources)
    unified = difflib.unified_diff(
        source_lines(sources[0], field_label), source_lines(sources[1], field_label), lineterm="", n=2
    )
    for line in list(unified)[2:]:
        change = ADDED if line.startswith("+") else REMOVED if line.startswith("-") else SAME
        diff.source.append((change, line))
    return diff
