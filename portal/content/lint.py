"""Automatic checks on a content version: forbidden words, links, opt-out, images, subject.

Each finding is blocking (the version cannot be submitted) or a warning (the reviewer
decides). Positions are character offsets in the field, for highlighting."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlsplit

BLOCKING = "blocking"
WARNING = "warning"

URL_IN_TEXT = re.compile(r"""(?:https?|ftp|javascript|data|file)://[^\s<>"'）)]+|javascript:[^\s<>"']+""", re.I)
TEMPLATE_EXPRESSION = re.compile(r"{{.*?}}|{%.*?%}", re.S)
SUBJECT_WARN_LENGTH = 40  # characters; Chinese subjects beyond this are cut on phones
UNSUBSCRIBE_VARIABLE = re.compile(r"{{\s*unsubscribe_url\b")

# GSM 03.38 basic set; the extension set counts two characters each.
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = set("^{}\\[~]|€\f")


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    field: str = ""
    start: int | None = None
    end: int | None = None
    detail: str = ""
    block: str = ""  # the block editor's block at fault, when known

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinkRules:
    deny_domains: list[str] = field(default_factory=list)
    allow_domains: list[str] = field(default_factory=list)  # empty: any domain not denied
    shortener_domains: list[str] = field(default_factory=list)


@dataclass
class SmsCost:
    characters: int
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int


def sms_cost(text: str) -> SmsCost:
    """Characters and the number of SMS a text costs: GSM-7 160 (153 per part when split),
    UCS-2 (any Chinese) 70 (67 per part)."""
    if all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in text):
        units = sum(2 if ch in GSM_EXTENSION else 1 for ch in text)
        single, part, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2  # emoji count as two
        single, part, encoding = 70, 67, "UCS-2"
    segments = 0 if units == 0 else (1 if units <= single else math.ceil(units / part))
    return SmsCost(characters=len(text), encoding=encoding, segments=segments)


class _HtmlFacts(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images_without_alt: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "img" and not (values.get("alt") or "").strip():
            self.images_without_alt.append(values.get("src") or "")

    def handle_data(self, data):
        self.text.append(data)


def html_facts(html: str) -> _HtmlFacts:
    parser = _HtmlFacts()
    parser.feed(html)
    parser.close()
    return parser


def _domain_matches(host: str, domains: list[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains if d))


def check_link(url: str, rules: LinkRules) -> Finding | None:
    if TEMPLATE_EXPRESSION.fullmatch(url.strip()):
        return None  # {{ unsubscribe_url }} and friends are the portal's own links
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "mailto":
        return None
    if scheme not in ("http", "https"):
        return Finding("link_scheme", BLOCKING, "Only http and https links are allowed.", detail=url)
    host = parts.hostname or ""
    if not host:
        return Finding("link_no_address", BLOCKING, "The link has no address.", detail=url)
    try:
        ipaddress.ip_address(host)
        return Finding("link_ip", BLOCKING, "Links must use a domain name, not a raw IP address.", detail=url)
    except ValueError:
        pass
    if _domain_matches(host, rules.shortener_domains):
        return Finding(
            "link_shortener", BLOCKING, "URL shorteners hide the destination; link to it directly.", detail=url
        )
    if _domain_matches(host, rules.deny_domains):
        return Finding("link_denied", BLOCKING, "This domain is on the deny list.", detail=url)
    if rules.allow_domains and not _domain_matches(host, rules.allow_domains):
        return Finding("link_not_allowed", WARNING, "This domain is not on the allow list.", detail=url)
    return None


def forbidden_word_findings(field_name: str, text: str, words: list[tuple[str, str]]) -> list[Finding]:
    findings = []
    lowered = text.lower()
    for word, severity in words:
        needle = word.lower()
        start = lowered.find(needle)
        while needle and start != -1:
            findings.append(
                Finding(
                    "forbidden_word",
                    severity,
                    f"Forbidden wording: “{word}”.",
                    field_name,
                    start,
                    start + len(needle),
                    word,
                )
            )
            start = lowered.find(needle, start + len(needle))
    return findings


def links_in(kind: str, fields: dict[str, str]) -> list[str]:
    if kind == "email":
        links = html_facts(fields.get("html_body", "")).links
        links += URL_IN_TEXT.findall(fields.get("text_body", ""))
    else:
        links = URL_IN_TEXT.findall(fields.get("sms_text", "") + "\n" + fields.get("wecom_text", ""))
    seen: dict[str, None] = dict.fromkeys(links)
    return list(seen)


def check_version(
    kind: str,
    fields: dict[str, str],
    words: list[tuple[str, str]],
    rules: LinkRules,
    sms_opt_out: str,
    rendered_subject: str | None = None,
) -> list[Finding]:
    """All findings for a version's fields (subject, preheader, html_body, text_body, sms_text, wecom_text).
    The subject's length is judged on `rendered_subject` (as a reader sees it) when given."""
    findings: list[Finding] = []
    searchable = ("subject", "preheader", "text_body", "sms_text", "wecom_text")
    for name in searchable:
        if fields.get(name):
            findings += forbidden_word_findings(name, fields[name], words)
    if kind == "email" and fields.get("html_body"):
        body_text = "".join(html_facts(fields["html_body"]).text)
        findings += forbidden_word_findings("html_body", body_text, words)
    for url in links_in(kind, fields):
        finding = check_link(url, rules)
        if finding:
            findings.append(finding)
    if kind == "email":
        subject = (fields.get("subject", "") if rendered_subject is None else rendered_subject).strip()
        if not subject:
            findings.append(Finding("subject_missing", BLOCKING, "An email needs a subject.", "subject"))
        elif len(subject) > SUBJECT_WARN_LENGTH:
            findings.append(
                Finding(
                    "subject_long",
                    WARNING,
                    f"The subject has {len(subject)} characters; phones show about {SUBJECT_WARN_LENGTH}.",
                    "subject",
                )
            )
        if not UNSUBSCRIBE_VARIABLE.search(fields.get("html_body", "")):
            findings.append(
                Finding(
                    "unsubscribe_missing",
                    BLOCKING,
                    "A marketing email must contain the unsubscribe link {{ unsubscribe_url }}.",
                    "html_body",
                )
            )
        for src in html_facts(fields.get("html_body", "")).images_without_alt:
            findings.append(Finding("image_alt", WARNING, "An image has no alt text.", "html_body", detail=src))
    if kind == "sms" and sms_opt_out and sms_opt_out not in fields.get("sms_text", ""):
        findings.append(
            Finding(
                "sms_opt_out_missing", BLOCKING, f"An SMS must contain the opt-out text “{sms_opt_out}”.", "sms_text"
            )
        )
    return findings


def has_blocking(findings: list[Finding]) -> bool:
    return any(f.severity == BLOCKING for f in findings)
