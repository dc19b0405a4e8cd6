"""Every page each role reaches speaks the reader's language.

For each demo identity: sign in through the test identity provider, follow every link from the
home page over the demo data, and fail on a 5xx, on a Latin word in the visible text of a zh-CN
page, and on Chinese UI text on an en page.

What a page shows that people wrote (names, subjects, tag names, notes) is data, not UI text:
a word counts as data when it occurs in a human-written value of the database (one with a
space, a capital or a Chinese character; a lower-case identifier such as `running` or
`email_open` is an internal code and does not excuse anything).

The allow-list holds what is the same in both languages:
- proper names of products and formats a Chinese team says in Latin letters: Excel, WPS, WeCom
  (企业微信 is shown beside it where it matters), PDF, CSV, XLSX, JSON, HTML, UTF-8, PostgreSQL, SQLite,
  Redis, OIDC;
- marketing acronyms Chinese B2B teams use as they are: MQL, ROI, CPA, A/B;
- units: ms, s, KB, MB, GB, px, h, d;
- technical terms Chinese administrators read as they are: API, SSO (the sign-in page and the
  identity provider say SSO too), and the HTTP words an integrator types: POST, Bearer;
- email addresses, URLs, URL paths and domain names (removed before the words are counted).
SMS is not on the list: in Chinese it is 短信; nor is any word of a sentence.
"""

from __future__ import annotations

import re
from collections import deque
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest
from sqlalchemy import String, Text, select

from tests.auth.conftest import callback_path, provider_login

ALLOWED_LATIN = frozenset(
    {
        "Excel",
        "WPS",
        "WeCom",
        "PDF",
        "CSV",
        "XLSX",
        "PNG",  # image formats, named as the media library accepts them
        "JPEG",
        "GIF",
        "WebP",
        "JSON",
        "HTML",
        "UTF",
        "PostgreSQL",
        "SQLite",
        "Redis",
        "OIDC",
        "MQL",
        "MQLs",
        "ROI",
        "CPA",
        "A",
        "B",
        "ms",
        "s",
        "KB",
        "MB",
        "GB",
        "px",
        "h",
        "d",
        "v",  # version numbers: v1, v2
        "GBK",  # character encodings, named as Excel and phones name them
        "UCS",
        "GSM",
        "API",
        "SSO",
        "POST",
        "Bearer",
    }
)
# Links the crawl does not follow: they sign out, download files, or leave the portal.
SKIPPED = re.compile(r"^/(auth/logout|auth/sso|auth/local|static/)|\.(csv|xlsx|pdf|json|zip)(\?|$)|/export|/download")
MAX_PAGES_PER_ROLE = 400
# Tables whose text the portal writes itself (labels, messages, codes): never data that excuses.
PORTAL_WRITTEN_TABLES = frozenset({"roles", "audit_events", "job_runs", "settings", "notifications", "alembic_version"})
# Identifiers people type, shown as they typed them: group names, forbidden words, domains,
# tag names, the text a scoring rule or a condition looks for.
PEOPLE_TYPED = frozenset(
    {
        ("sso_group_mappings", "group_name"),
        ("users", "sso_groups"),
        ("content_forbidden_words", "word"),
        ("content_link_rules", "domain"),
        ("tags", "name"),
        ("scoring_rules", "property_name"),
        ("scoring_rules", "property_contains"),
    }
)
RULE_VALUE_KEYS = ("value", "contains", "property")

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
URL = re.compile(r"(https?://|www\.)\S+")
DOMAIN = re.compile(r"\b[\w-]+(\.[\w-]+)*\.[a-z]{2,}\b")
URL_PATH = re.compile(r"(?<![\w/])/[\w/.{}-]+")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
VISIBLE_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")


class VisibleText(HTMLParser):
    """The text a person sees or hears: text nodes outside script/style/template, button and
    submit values, and the attributes screen readers and tooltips read."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self._hidden = 0
        self._own_language: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag in ("script", "style", "template", "datalist"):
            self._hidden += 1
        if "lang" in values and tag != "html":
            # Text marked with a language of its own ("English" on the language switch).
            self._own_language.append(tag)
            self._hidden += 1
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        for name in VISIBLE_ATTRIBUTES:
            if values.get(name):
                self.parts.append(values[name] or "")
        if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
            self.parts.append(values["value"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "template", "datalist") and self._hidden:
            self._hidden -= 1
        if self._own_language and self._own_language[-1] == tag:
            self._own_language.pop()
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.parts.append(data)


def human_data(db) -> str:
    """Every human-written text value in the database, joined (see the module docstring)."""
    values: list[str] = []
    typed: list[str] = []
    for table in db.metadata.sorted_tables:
        if table.name in PORTAL_WRITTEN_TABLES:
            continue
        columns = [c for c in table.columns if isinstance(c.type, String | Text)]
        json_columns = [c for c in table.columns if c.type.__class__.__name__ == "JSON"]
        if not columns and not json_columns:
            continue
        for row in db.session.execute(select(*columns, *json_columns)):
            for column, value in zip([*columns, *json_columns], row, strict=True):
                if (table.name, column.name) in PEOPLE_TYPED:
                    typed.extend(_strings(value))
                elif column.name == "rules":
                    typed.extend(_rule_values(value))
                else:
                    values.extend(_strings(value))
    human = [v for v in values if re.search(r"\s|[A-Z]|[\u3400-\u9fff]", v)]
    return "\n".join(human + typed)


def _rule_values(node: Any) -> list[str]:
    if not isinstance(node, dict):
        return []
    if "items" in node:
        return [s for item in node["items"] for s in _rule_values(item)]
    return [str(node[k]) for k in RULE_VALUE_KEYS if node.get(k) not in (None, "")]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)] + [k for k in value if isinstance(k, str)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def latin_words(text: str, data: str) -> set[str]:
    text = URL_PATH.sub(" ", DOMAIN.sub(" ", URL.sub(" ", EMAIL.sub(" ", text))))
    found = set()
    for word in LATIN_WORD.findall(text):
        if word in ALLOWED_LATIN or re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", data):
            continue
        found.add(word)
    return found


def chinese_runs(text: str, data: str, place_names: set[str], samples: list[str]) -> set[str]:
    # A preview writes sample values into the template's own text ("王小明" + "您好"): take the
    # samples out first, so that what is left is judged alone.
    for sample in samples:
        text = text.replace(sample, " ")
    return {run for run in CJK_RUN.findall(text) if run not in data and run not in place_names}


def crawl(client, start: str = "/") -> dict[str, tuple[int, str, str]]:
    """path -> (status, content type, visible text) for every page reachable from `start`."""
    seen: dict[str, tuple[int, str, str]] = {}
    queue = deque([start])
    while queue and len(seen) < MAX_PAGES_PER_ROLE:
        path = queue.popleft()
        if path in seen:
            continue
        response = client.get(path)
        content_type = response.headers.get("Content-Type", "")
        if response.status_code in (301, 302, 303) and response.location:
            seen[path] = (response.status_code, content_type, "")
            target = urlsplit(response.location)
            if not target.netloc or target.netloc == "localhost":
                queue.append(target.path + (f"?{target.query}" if target.query else ""))
            continue
        if "text/html" not in content_type:
            seen[path] = (response.status_code, content_type, "")
            continue
        parser = VisibleText()
        parser.feed(response.get_data(as_text=True))
        seen[path] = (response.status_code, content_type, " ".join(parser.parts))
        for href in parser.links:
            href = urldefrag(href)[0]
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or not parts.path.startswith("/") or SKIPPED.search(href):
                continue
            if href not in seen:
                queue.append(href)
    return seen


@pytest.fixture
def demo_portal(app):
    from portal.delivery.render import sample_variables
    from portal.demo import load_demo_data
    from portal.extensions import db

    # The crawl walks the demo data alone: messages earlier tests left in the development
    # outbox are theirs (raw MIME), not part of it.
    for leftover in Path(app.config["OUTBOX_DIR"]).glob("*.eml"):
        leftover.unlink()
    with app.app_context():
        load_demo_data()
        uploaded = lived_in()
        # The previews fill templates with a sample contact: data too, not UI text.
        data = "\n".join([human_data(db), *_strings(sample_variables()), uploaded])
        db.session.remove()
    return data


def lived_in() -> str:
    """What a team's days leave behind beyond the demo data, so that the crawl meets the pages
    and sentences of those states too: changes requested and a new version under review (the
    diff), a contact with custom fields, notes, activity and changed consent, an import with
    rejected rows and one that failed, finished diagnostics, refused sign-ins and a locked
    break-glass account in the audit log, and the notifications all of this sends. Returns the
    text of the uploaded files: the rejected rows show it back as the file had it, as data."""
    import io

    from sqlalchemy import select

    from jobs.maintenance import run_diagnostics
    from portal.audience import importing
    from portal.audience import service as audience
    from portal.audience.models import Contact
    from portal.auth import service as auth
    from portal.auth.models import User
    from portal.content import service as content
    from portal.content.models import Asset
    from portal.extensions import db
    from portal.queue import JobRun

    def person(email: str) -> User:
        return db.session.scalar(select(User).where(User.email == email))

    author, reviewer = person("ops@example.com"), person("reviewer@example.com")
    admin = person("admin@example.com") or reviewer

    sms = db.session.scalar(select(Asset).where(Asset.kind == "sms"))
    content.request_changes(reviewer, sms.latest.id, "请把时间写成“明天下午两点”，并加上会场地址。")
    draft = content.new_draft_from(author, sms.id)
    content.save_draft(
        author,
        draft.id,
        {
            "sms_text": "【示例科技】{{ contact.name | default('您') }}好，"
            "发布会明天下午两点在上海国际会议中心开始。回T退订"
        },
    )
    content.submit_for_review(author, draft.id)

    contact = db.session.scalar(select(Contact).order_by(Contact.id).limit(1))
    audience.update_contact(
        author,
        contact.id,
        {"email": contact.email, "mobile": contact.mobile, "name": contact.name},
        attributes=[("会员等级", "金卡"), ("来源渠道", "展会")],
    )
    audience.add_note(author, contact.id, "展会上聊过，对新品很感兴趣。")
    audience.log_activity(author, contact.id, "trade_show", note="上海展会")
    audience.change_consent(author, contact.id, "sms", "withdrawn")

    rows = "邮箱,手机,姓名,营销同意\nli@example.cn,13800138001,李雷,是\n不是邮箱,123,韩梅梅,也许\n"
    upload = importing.save_upload(author, "展会名单.csv", io.BytesIO(rows.encode("gb18030")))
    importing.confirm(
        author, upload.id, {"0": "email", "1": "mobile", "2": "name", "3": "consent_email"}, "fill", "none"
    )
    importing.run_import(upload.id)
    broken = importing.save_upload(author, "名单.csv", io.BytesIO("邮箱,姓名\na@example.cn,张三\n".encode()))
    importing.confirm(author, broken.id, {"0": "email", "1": "name"}, "fill", "none")
    importing.upload_path(broken).unlink()  # the upload vanished before the worker read it
    importing.run_import(broken.id)

    run = JobRun(kind="diagnostics", job_name="jobs.maintenance.run_diagnostics", queue="default")
    run.created_by_id = admin.id
    db.session.add(run)
    db.session.commit()
    run_diagnostics(run.id)

    for reason in ("provider_unreachable", "access_denied", "MismatchingStateError", "groups_missing"):
        auth.record_failed_sso(reason, "", "203.0.113.9")
    return rows


def sign_in(client, subject: str) -> None:
    start = client.get("/auth/sso?next=/")
    assert start.status_code == 302, start.get_data(as_text=True)[:300]
    answer = client.get(callback_path(provider_login(start.headers["Location"], subject)))
    assert answer.status_code in (302, 303), answer.get_data(as_text=True)[:300]


def _identities():
    from portal.dev.identities import DEMO_IDENTITIES

    return [pytest.param(str(i["sub"]), id=str(i["role"])) for i in DEMO_IDENTITIES]


@pytest.mark.parametrize("subject", _identities())
def test_every_page_a_role_reaches_speaks_chinese_in_zh_cn(app, demo_portal, subject):
    client = app.test_client()
    sign_in(client, subject)
    pages = crawl(client)
    assert len(pages) > 5, f"the crawl reached only {sorted(pages)}"
    server_errors = {path: status for path, (status, _type, _text) in pages.items() if status >= 500}
    english = {
        path: sorted(words) for path, (_s, _t, text) in pages.items() if (words := latin_words(text, demo_portal))
    }
    assert server_errors == {}
    assert english == {}, "Latin words on zh-CN pages (path: words):\n" + "\n".join(
        f"{path}: {' '.join(words)}" for path, words in sorted(english.items())
    )


@pytest.mark.parametrize("subject", _identities())
def test_every_page_a_role_reaches_has_no_chinese_ui_text_in_english(app, demo_portal, subject):
    from portal.audience.normalise import PROVINCES, REGION_GROUPS
    from portal.delivery.render import sample_variables

    place_names = {
        *(part for region in REGION_GROUPS for part in region.split("/")),  # 港澳台/海外
        *(p[0] for p in PROVINCES),
        *(a for p in PROVINCES for a in p[1]),
    }
    with app.app_context():
        samples = sorted((s for s in _strings(sample_variables()) if CJK_RUN.search(s)), key=len, reverse=True)
    client = app.test_client()
    sign_in(client, subject)
    client.post("/locale", data={"locale": "en", "next": "/"})
    pages = crawl(client)
    assert len(pages) > 5, f"the crawl reached only {sorted(pages)}"
    server_errors = {path: status for path, (status, _type, _text) in pages.items() if status >= 500}
    chinese = {
        path: sorted(runs)
        for path, (_s, _t, text) in pages.items()
        if (runs := chinese_runs(text, demo_portal, place_names, samples))
    }
    assert server_errors == {}
    assert chinese == {}, "Chinese UI text on English pages (path: text):\n" + "\n".join(
        f"{path}: {' '.join(runs)}" for path, runs in sorted(chinese.items())
    )
