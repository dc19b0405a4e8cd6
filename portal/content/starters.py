"""The email templates that ship with the portal, as block documents.

Each is a complete, reviewed-looking message in Chinese: a headline, the body, one clear call
to action, and the footer with the unsubscribe link and the sender's address. Authors replace
the example links and pictures; the checks flag any `https://www.example.com` left behind only
through the usual link rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l

from portal.content.blocks import new_block, new_section

GREETING = '<p>{{ contact.name | default("客户") }}，您好！</p>'


def _block(kind: str, column: int = 0, **settings: Any) -> dict[str, Any]:
    return {**new_block(kind, column), **settings}


def _section(*blocks: dict[str, Any], columns: int = 1, background: str = "#ffffff") -> dict[str, Any]:
    section = new_section(columns)
    section["background"] = background
    section["blocks"] = list(blocks)
    return section


def _footer() -> dict[str, Any]:
    return _section(
        _block("social"),
        _block("footer", address="{{ sender.company }} · 上海市浦东新区世纪大道 100 号"),
        background="#f4f5f7",
    )


@dataclass(frozen=True)
class StarterTemplate:
    key: str
    kind: str
    name: Any  # a lazy translation: the list shows it in the reader's language
    subject: str
    preheader: str
    sections: tuple[dict[str, Any], ...]

    def fields(self) -> dict[str, Any]:
        return {"subject": self.subject, "preheader": self.preheader, "blocks": {"sections": list(self.sections)}}


def _newsletter() -> StarterTemplate:
    return StarterTemplate(
        "newsletter",
        "email",
        _l("Monthly newsletter"),
        "{{ campaign.name }}｜本月行业资讯与产品动态",
        "三分钟读完本月要点",
        (
            _section(_block("heading", text="本月资讯", align="center", color="#ffffff"), background="#1a73e8"),
            _section(
                _block("text", html=GREETING + "<p>以下是本月值得关注的三件事，供您和团队参考。</p>"),
                _block("divider"),
            ),
            _section(
                _block("heading", 0, text="行业观察", level="3"),
                _block("text", 0, html="<p>数字化营销预算继续向私域与内容倾斜。</p>"),
                _block("heading", 1, text="产品动态", level="3"),
                _block("text", 1, html="<p>营销自动化新增审批流与多渠道触达。</p>"),
                columns=2,
            ),
            _section(_block("button", text="阅读全文", href="https://www.example.com/newsletter")),
            _footer(),
        ),
    )


def _webinar() -> StarterTemplate:
    return StarterTemplate(
        "webinar",
        "email",
        _l("Webinar invitation"),
        "诚邀您参加线上研讨会：{{ campaign.name }}",
        "名额有限，欢迎报名",
        (
            _section(
                _block("heading", text="线上研讨会邀请", align="center"),
                _block(
                    "text",
                    html=GREETING
                    + "<p>我们诚挚邀请您参加本期线上研讨会，与行业专家一起探讨营销增长的新方法。</p>"
                    + "<ul><li>时间：周四 14:00–15:30</li><li>形式：线上直播，可回看</li></ul>",
                ),
                _block("button", text="立即报名", href="https://www.example.com/webinar"),
            ),
            _footer(),
        ),
    )


def _whitepaper() -> StarterTemplate:
    return StarterTemplate(
        "whitepaper",
        "email",
        _l("Whitepaper download follow-up"),
        "您下载的白皮书已准备好",
        "附带三条落地建议",
        (
            _section(
                _block("heading", text="感谢下载白皮书"),
                _block(
                    "text",
                    html=GREETING + "<p>感谢您下载我们的白皮书。为方便您与团队分享，我们整理了其中三条落地建议。</p>",
                ),
                _block("button", text="再次下载白皮书", href="https://www.example.com/whitepaper"),
                _block("text", html="<p>如需顾问一对一解读，请直接回复本邮件。</p>"),
            ),
            _footer(),
        ),
    )


def _nurture() -> StarterTemplate:
    return StarterTemplate(
        "nurture",
        "email",
        _l("Nurture email"),
        "{{ contact.company | default('贵公司') }}的营销团队可以这样提效",
        "一个客户案例，五分钟读完",
        (
            _section(
                _block("heading", text="同行是怎么做的？"),
                _block(
                    "text",
                    html=GREETING
                    + "<p>一家与{{ contact.company | default('贵公司') }}规模相近的企业，"
                    + "用三个月把线索转化率提升了 30%。</p>",
                ),
                _block("button", text="查看客户案例", href="https://www.example.com/case"),
            ),
            _footer(),
        ),
    )


def _reengagement() -> StarterTemplate:
    return StarterTemplate(
        "reengagement",
        "email",
        _l("Re-engagement of dormant contacts"),
        "好久不见，{{ contact.name | default('朋友') }}",
        "告诉我们您还想收到哪些内容",
        (
            _section(
                _block("heading", text="我们想念您", align="center"),
                _block(
                    "text",
                    align="center",
                    html="<p>最近没有收到您的消息。如果您仍想了解我们的资讯，请点击下方按钮；"
                    + "如果不再需要，也可以随时退订。</p>",
                ),
                _block("button", text="继续订阅", href="https://www.example.com/stay"),
            ),
            _footer(),
        ),
    )


def _all() -> tuple[StarterTemplate, ...]:
    return (_newsletter(), _webinar(), _whitepaper(), _nurture(), _reengagement())


TEMPLATES = _all()


def template(key: str) -> StarterTemplate | None:
    return next((t for t in TEMPLATES if t.key == key), None)
