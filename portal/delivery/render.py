"""Personalised message templates, rendered in Jinja's immutable sandbox.

Authors write `{{ contact.name | default("客户") }}`; only the documented variables exist, a
template that does not compile or names an unknown variable is refused at save time with
its line, and rendering is bounded in time and output size. Compile once, render many:
the sender renders one compiled template for every recipient of a step."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

# The documented variables. Contacts' fields are read through `contact.<field>`.
CONTACT_FIELDS = (
    "name",
    "email",
    "mobile",
    "company",
    "industry",
    "province",
    "city",
    "company_size",
    "attributes",
)
TOP_LEVEL_VARIABLES = {
    "contact": CONTACT_FIELDS,
    "unsubscribe_url": None,
    "view_in_browser_url": None,
    "campaign": ("name",),
    "sender": ("company",),
}
MAX_OUTPUT_CHARS = 512_000
MAX_RENDER_SECONDS = 0.5


class TemplateRefused(ValueError):
    """The template cannot be saved: `line` (1-based, or None) and a reason."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(f"line {line}: {reason}" if line else reason)
        self.reason = reason
        self.line = line


class RenderLimitExceeded(RuntimeError):
    pass


# Filters an author may use. Left out on purpose: attr, format, safe (would let contact data
# inject HTML), map/select/... (attribute walks), pprint, xmlattr, tojson.
ALLOWED_FILTERS = frozenset(
    {
        "default",
        "d",
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "truncate",
        "replace",
        "join",
        "first",
        "last",
        "length",
        "round",
        "int",
        "float",
        "striptags",
        "urlencode",
        "center",
        "wordcount",
        "escape",
        "e",
    }
)


class _Environment(ImmutableSandboxedEnvironment):
    def __init__(self, autoescape: bool):
        super().__init__(autoescape=autoescape, auto_reload=False, cache_size=0)
        # Nothing from the application, nor Jinja's own helpers (range, lipsum, cycler,
        # joiner, namespace, dict), is reachable from a template.
        self.globals = {}


_HTML_ENV = _Environment(autoescape=True)
_TEXT_ENV = _Environment(autoescape=False)


def _check_variables(ast: nodes.Template) -> None:
    """Refuse names and `contact.<field>` attributes that are not documented."""
    assigned = {node.name for node in ast.find_all(nodes.Name) if node.ctx in ("store", "param")}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in TOP_LEVEL_VARIABLES and name.name not in assigned:
            raise TemplateRefused(f"unknown variable '{name.name}'", name.lineno)
    for attribute in ast.find_all(nodes.Getattr):
        if attribute.attr.startswith("_"):
            raise TemplateRefused(f"'{attribute.attr}' is not allowed", attribute.lineno)
        if isinstance(attribute.node, nodes.Name) and attribute.node.name in TOP_LEVEL_VARIABLES:
            allowed = TOP_LEVEL_VARIABLES[attribute.node.name]
            if allowed is None or attribute.attr not in allowed:
                raise TemplateRefused(f"unknown variable '{attribute.node.name}.{attribute.attr}'", attribute.lineno)
    for call in ast.find_all(nodes.Call):
        raise TemplateRefused("calling functions or methods is not allowed", call.lineno)
    for used in ast.find_all(nodes.Filter):
        if used.name not in ALLOWED_FILTERS:
            raise TemplateRefused(f"the filter '{used.name}' is not allowed", used.lineno)


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    html: bool
    _template: Any

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with the documented variables; bounded in time and size."""
        started = time.monotonic()
        size = 0
        parts: list[str] = []
        append = parts.append
        try:
            for number, chunk in enumerate(self._template.generate(**variables)):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderLimitExceeded("the message is too large")
                # The clock is read every 64 pieces: a runaway loop still stops within a
                # fraction of a millisecond of the limit, and a normal message pays little.
                if not number & 63 and time.monotonic() - started > MAX_RENDER_SECONDS:
                    raise RenderLimitExceeded("the template takes too long to render")
                append(chunk)
        except SecurityError as exc:
            raise RenderLimitExceeded(str(exc)) from exc
        return "".join(parts)


def compile_template(source: str, html: bool) -> CompiledTemplate:
    """Compile `source`, or raise TemplateRefused with the line and the reason."""
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        ast = env.parse(source)
        _check_variables(ast)
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(exc.message or "syntax error", exc.lineno) from exc
    return CompiledTemplate(source, html, template)


def contact_variables(contact: Mapping[str, Any]) -> dict[str, Any]:
    """The `contact` variable from a contact's fields: empty fields are left out, so that
    `default(...)` in the template supplies its fallback."""
    values = {key: contact.get(key) for key in CONTACT_FIELDS if contact.get(key) not in (None, "", {})}
    values.setdefault("attributes", {})
    return values


# Built-in sample people for previews, until a real contact is picked.
SAMPLE_CONTACTS: dict[str, dict[str, Any]] = {
    "zh": {
        "name": "王小明",
        "email": "xiaoming.wang@example.com",
        "mobile": "+8613800138000",
        "company": "上海云启科技有限公司",
        "industry": "科技",
        "province": "上海市",
        "city": "上海",
        "company_size": "200-499",
        "attributes": {"职位": "市场总监"},
    },
    "en": {
        "name": "Emily Chen",
        "email": "emily.chen@example.com",
        "mobile": "+8613900139000",
        "company": "Northwind Trading",
        "industry": "Retail",
        "province": "广东省",
        "city": "深圳",
        "company_size": "50-199",
        "attributes": {"title": "Head of Marketing"},
    },
    "empty": {"email": "someone@example.com"},
}


def sample_variables(sample: str = "zh") -> dict[str, Any]:
    return {
        "contact": contact_variables(SAMPLE_CONTACTS.get(sample, SAMPLE_CONTACTS["zh"])),
        "unsubscribe_url": "https://portal.example.com/u/preview",
        "view_in_browser_url": "https://portal.example.com/v/preview",
        "campaign": {"name": "春季新品发布"},
        "sender": {"company": "示例科技"},
    }
