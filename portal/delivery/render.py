"""Personalised message templates, rendered in Jinja's immutable sandbox under hard limits.

Authors write `{{ contact.name | default("客户") }}`; only the documented variables exist, a
template that does not compile, names an unknown variable or uses a loader tag is refused at
save time with its line, and every render is bounded: in time (checked while the template runs,
whether or not it writes anything), in the size of each value it makes, in the work and memory
all its operations together may use, in loop iterations and in output size. Compile once,
render many: the sender renders one compiled template for every recipient of a step, in the
worker, with the same limits as the editor's preview.

The limits and why (a real message is a few kilobytes and renders in about a millisecond):
- MAX_SOURCE_CHARS: a template's source; the largest email bodies seen are well under 100 KB.
- MAX_NESTING / MAX_EXPRESSION_DEPTH: deeper blocks or expressions only serve to exhaust the
  compiler (Python refuses more than 20 nested blocks, the parser recurses per parenthesis).
- MAX_VALUE_CHARS / MAX_VALUE_ITEMS: no single string or list a template makes may exceed
  what a whole message may hold; checked before the value is built, so `'x' * 200000000` and
  `center(300000000)` never allocate.
- MAX_WORK_CHARS: everything the template's operators and filters make, added up; this bounds
  both the memory a render can hold and the time spent copying, independent of the clock.
- MAX_LOOP_ITERATIONS: all loops of one render together, so nested loops that print nothing
  stop after a bounded number of steps.
- MAX_RENDER_SECONDS: the backstop for anything else, read as loop steps, operators,
  filters and output pieces go by, so a render that breaks a limit stops well within half a
  second. It counts the rendering thread's CPU time, not the wall clock: on a busy machine a
  normal message must not fail because other processes had the CPU.
- MAX_OUTPUT_CHARS: the rendered message.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, TemplateSyntaxError, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import _PassArg
from jinja2.visitor import NodeTransformer

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
MAX_SOURCE_CHARS = 200_000
MAX_NESTING = 8
MAX_EXPRESSION_DEPTH = 40
MAX_OUTPUT_CHARS = 512_000
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
MAX_VALUE_ITEMS = 10_000
MAX_WORK_CHARS = 4 * MAX_OUTPUT_CHARS
MAX_LOOP_ITERATIONS = 10_000
MAX_NUMBER_BITS = 4_096
MAX_RENDER_SECONDS = 0.3

# Tags that need a loader, define callables or switch escaping off: refused at save.
REFUSED_TAGS = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.Block: "block",
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}
BLOCK_STATEMENTS = (nodes.For, nodes.If, nodes.With, nodes.FilterBlock, nodes.AssignBlock)

# English descriptions, for logs and the worker's job messages; pages translate the code.
REFUSAL_REASONS = {
    "syntax_error": "syntax error: {detail}",
    "unknown_variable": "unknown variable '{name}'",
    "private_attribute": "'{name}' is not allowed",
    "call_not_allowed": "calling functions or methods is not allowed",
    "filter_not_allowed": "the filter '{name}' is not allowed",
    "tag_not_allowed": "the tag '{tag}' is not allowed",
    "too_deeply_nested": "nested more than {limit} levels deep",
    "too_long": "longer than {limit} characters",
}
LIMIT_REASONS = {
    "output_too_large": "the message is larger than {limit} characters",
    "value_too_large": "a value would be larger than {limit} characters or items",
    "number_too_large": "a number would be larger than {limit} bits",
    "too_much_work": "the template's operations make more than {limit} characters in all",
    "too_many_iterations": "the loops run more than {limit} times",
    "too_slow": "the template takes longer than {limit} seconds to render",
    "string_formatting": "string formatting with % is not allowed",
    "not_allowed": "an operation that is not allowed",
    "render_error": "the template fails while rendering ({detail})",
}


class TemplateRefused(ValueError):
    """The template cannot be saved: a `code` with its `params`, the field, and the 1-based
    `line` (or None)."""

    def __init__(self, code: str, line: int | None = None, field: str | None = None, **params: Any):
        self.code, self.line, self.field, self.params = code, line, field, params
        self.reason = REFUSAL_REASONS[code].format(**params)
        where = " ".join(part for part in (field and f"{field}:", line and f"line {line}:") if part)
        super().__init__(f"{where} {self.reason}".strip())

    def in_field(self, field: str) -> TemplateRefused:
        return TemplateRefused(self.code, self.line, field, **self.params)


class RenderLimitExceeded(RuntimeError):
    """A render stopped by a limit (or failing at run time): a `code` with its `params`."""

    def __init__(self, code: str, **params: Any):
        self.code, self.params = code, params
        super().__init__(LIMIT_REASONS[code].format(**params))


# Filters an author may use. Left out on purpose: attr, format, safe (would let contact data
# inject HTML), map/select/... (attribute walks), pprint, xmlattr, tojson, and the padding
# filters indent and wordwrap.
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


@dataclass
class _Budget:
    """What one render may still spend; lives in a context variable while the render runs."""

    deadline: float
    work_left: int = MAX_WORK_CHARS
    iterations_left: int = MAX_LOOP_ITERATIONS
    ticks: int = 0

    def tick(self) -> None:
        # Reading a thread's CPU clock costs about half a microsecond; every step between two
        # readings is bounded by the value limits (well under a millisecond), so reading it
        # every 16th step still stops a render within milliseconds of its limit.
        self.ticks += 1
        if not self.ticks & 15 and time.thread_time() > self.deadline:
            raise RenderLimitExceeded("too_slow", limit=MAX_RENDER_SECONDS)

    def spend(self, size: int) -> None:
        if size > MAX_VALUE_CHARS:
            raise RenderLimitExceeded("value_too_large", limit=MAX_VALUE_CHARS)
        self.work_left -= size
        if self.work_left < 0:
            raise RenderLimitExceeded("too_much_work", limit=MAX_WORK_CHARS)
        self.tick()


_budget: ContextVar[_Budget | None] = ContextVar("render_budget", default=None)


def _current_budget() -> _Budget:
    budget = _budget.get()
    if budget is None:  # a template rendered outside CompiledTemplate.render still has limits
        budget = _Budget(deadline=time.thread_time() + MAX_RENDER_SECONDS)
        _budget.set(budget)
    return budget


def _chars(value: Any) -> int:
    """About how many characters `value` becomes as text, without making that text: a list
    of a thousand references to one long string is a thousand long strings once printed."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list | tuple | set | frozenset):
        return sum(_chars(item) + 2 for item in value)
    if isinstance(value, dict):
        return sum(_chars(key) + _chars(item) + 4 for key, item in value.items())
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    return len(str(value))


def _check_number(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_NUMBER_BITS:
        raise RenderLimitExceeded("number_too_large", limit=MAX_NUMBER_BITS)
    return value


def _bounded_binop(operator_name: str, left: Any, right: Any) -> Any:
    """Work out how big the result of an operator would be before making it."""
    budget = _current_budget()
    sequences = str | list | tuple
    if operator_name == "*" and (isinstance(left, sequences) or isinstance(right, sequences)):
        sequence, times = (left, right) if isinstance(left, sequences) else (right, left)
        if not isinstance(times, int):
            raise RenderLimitExceeded("not_allowed")
        times = max(times, 0)
        if not isinstance(sequence, str) and len(sequence) * times > MAX_VALUE_ITEMS:
            raise RenderLimitExceeded("value_too_large", limit=MAX_VALUE_ITEMS)
        budget.spend(_chars(sequence) * times)
    elif operator_name == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        if not isinstance(left, str) and len(left) + len(right) > MAX_VALUE_ITEMS:
            raise RenderLimitExceeded("value_too_large", limit=MAX_VALUE_ITEMS)
        budget.spend(_chars(left) + _chars(right))
    elif operator_name == "%" and isinstance(left, str):
        raise RenderLimitExceeded("string_formatting")
    elif operator_name == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right * math.log2(abs(left)) > MAX_NUMBER_BITS:
            raise RenderLimitExceeded("number_too_large", limit=MAX_NUMBER_BITS)
    elif (
        operator_name == "*"
        and isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > MAX_NUMBER_BITS
    ):
        raise RenderLimitExceeded("number_too_large", limit=MAX_NUMBER_BITS)
    budget.tick()
    return _check_number(_BINOPS[operator_name](left, right))


_BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "**": operator.pow,
    "%": operator.mod,
}

# The filters as Jinja defines them, called once a filter's arguments are known to be within
# the limits. Those that take Jinja's environment get this one, as call_filter would give.
_FILTERS = Environment(autoescape=True)


def _check_center(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = args[0] if args else kwargs.get("width", 80)
    if not isinstance(width, int) or width > MAX_VALUE_CHARS:
        raise RenderLimitExceeded("value_too_large", limit=MAX_VALUE_CHARS)


def _check_replace(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if len(args) >= 2:
        text, old, new = str(value), str(args[0]), str(args[1])
        count = text.count(old) if old else len(text) + 1
        if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
            count = min(count, args[2])
        budget.spend(len(text) + count * max(len(new) - len(old), 0))


def _check_join(budget: _Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if isinstance(value, list | tuple):
        separator = str(args[0]) if args else str(kwargs.get("d", ""))
        budget.spend(_chars(value) + len(separator) * len(value))


# The filters whose result can grow beyond their input's size: what they would make is
# worked out, and charged, before they run.
_SIZE_CHECKS = {"center": _check_center, "replace": _check_replace, "join": _check_join}


def _bounded_filter(name: str):
    """A filter that checks the sizes it would make first and charges what it made. Being
    `pass_context`, it is never run at compile time (Jinja folds only context-free filters).

    The filter's function and what it is passed are looked up once, here: a template calls
    filters for every recipient (a name in each paragraph), and Jinja's generic
    `call_filter` would look them up on every call."""
    function = _FILTERS.filters[name]
    passes = _PassArg.from_obj(function)
    if passes not in (None, _PassArg.eval_context, _PassArg.environment):
        raise ValueError(f"filter {name!r} takes the template's context")  # none allowed does
    check = _SIZE_CHECKS.get(name)

    @pass_context
    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _current_budget()
        if check is not None:
            check(budget, value, args, kwargs)
        if passes is None:
            result = function(value, *args, **kwargs)
        elif passes is _PassArg.eval_context:
            result = function(context.eval_ctx, value, *args, **kwargs)
        else:
            result = function(_FILTERS, value, *args, **kwargs)
        if isinstance(result, str | list):
            budget.spend(len(result))
        elif isinstance(result, int):
            _check_number(result)
        return result

    return bounded


@pass_context
def _joined(context: Context, values: list[Any]) -> str:
    """The `~` operator, charged for what it makes."""
    _current_budget().spend(_chars(values))
    return markup_join(values) if context.eval_ctx.autoescape else str_join(values)


@pass_context
def _literal(context: Context, value: Any) -> Any:
    """A list, tuple or dict written in the template, charged for what it holds."""
    _current_budget().spend(_chars(value))
    return value


@pass_context
def _counted(context: Context, iterable: Any) -> Iterator[Any]:
    """What a `for` loop iterates, counted against the render's loop budget, the clock
    checked as it goes: a loop that prints nothing is stopped as surely as one that does."""
    budget = _current_budget()
    for item in iterable:
        budget.iterations_left -= 1
        if budget.iterations_left < 0:
            raise RenderLimitExceeded("too_many_iterations", limit=MAX_LOOP_ITERATIONS)
        budget.tick()
        yield item


class _Instrument(NodeTransformer):
    """Routes `~`, literal lists and dicts, and the iterables of `for` loops through the
    bounded helpers above."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        items = [self.visit(child) for child in node.nodes]
        return nodes.Filter(nodes.List(items, lineno=node.lineno), "_joined", [], [], None, None, lineno=node.lineno)

    def _charged_literal(self, node: nodes.List | nodes.Tuple | nodes.Dict) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node  # an assignment target, not a value
        return nodes.Filter(node, "_literal", [], [], None, None, lineno=node.lineno)

    visit_List = visit_Tuple = visit_Dict = _charged_literal

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_counted", [], [], None, None, lineno=node.lineno)
        return node


class _NoFolding(CodeGenerator):
    """Jinja evaluates constant output expressions while compiling, before any limit applies
    (`{{ 'x' * 200000000 }}` would be built at save time and on every compile). Only literal
    text is turned into constants here; every expression runs when rendering, under the limits."""

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> str:
        if not isinstance(node, nodes.TemplateData):
            raise nodes.Impossible()
        return super()._output_child_to_const(node, frame, finalize)


# Every attribute a dict instance has (it has no __dict__ of its own): dict's and object's.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = _NoFolding
    intercepted_binops = frozenset(_BINOPS)

    def __init__(self, autoescape: bool):
        super().__init__(autoescape=autoescape, auto_reload=False, cache_size=0, optimized=False)
        # Nothing from the application, nor Jinja's own helpers (range, lipsum, cycler,
        # joiner, namespace, dict), is reachable from a template.
        self.globals = {}
        self.filters = {name: _bounded_filter(name) for name in ALLOWED_FILTERS}
        self.filters.update({"_joined": _joined, "_counted": _counted, "_literal": _literal})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # The documented variables are plain dicts, read as `contact.name` about forty times
        # a message. Jinja tries the attribute first, and a dict's missing attribute costs an
        # AttributeError every time before the key is looked up. For a plain dict and a name
        # that is no attribute of dict the answer is always the key's value or undefined, so
        # that is looked up directly; anything else goes the sandbox's own way.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Nothing can be called, so a method is of no use to a template; printed, it would
        # only show Python internals ("<built-in method ...>").
        return not callable(value) and super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _bounded_binop(operator, left, right)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        # Calls are refused at save; this keeps a template compiled some other way inert.
        raise SecurityError("calling is not allowed")


_HTML_ENV = _Environment(autoescape=True)
_TEXT_ENV = _Environment(autoescape=False)


def _check_shape(ast: nodes.Template) -> None:
    """Refuse loader tags and nesting deeper than the limits, with the line."""
    stack: list[tuple[nodes.Node, int, int]] = [(ast, 0, 0)]
    while stack:
        node, depth, blocks = stack.pop()
        for kind, tag in REFUSED_TAGS.items():
            if isinstance(node, kind):
                raise TemplateRefused("tag_not_allowed", node.lineno, tag=tag)
        if isinstance(node, BLOCK_STATEMENTS):
            blocks += 1
        if blocks > MAX_NESTING or depth > MAX_EXPRESSION_DEPTH:
            limit = MAX_NESTING if blocks > MAX_NESTING else MAX_EXPRESSION_DEPTH
            raise TemplateRefused("too_deeply_nested", node.lineno, limit=limit)
        stack.extend((child, depth + 1, blocks) for child in node.iter_child_nodes())


def _check_variables(ast: nodes.Template) -> None:
    """Refuse names and `contact.<field>` attributes that are not documented."""
    assigned = {node.name for node in ast.find_all(nodes.Name) if node.ctx in ("store", "param")}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in TOP_LEVEL_VARIABLES and name.name not in assigned:
            raise TemplateRefused("unknown_variable", name.lineno, name=name.name)
    for attribute in ast.find_all(nodes.Getattr):
        if attribute.attr.startswith("_"):
            raise TemplateRefused("private_attribute", attribute.lineno, name=attribute.attr)
        if isinstance(attribute.node, nodes.Name) and attribute.node.name in TOP_LEVEL_VARIABLES:
            allowed = TOP_LEVEL_VARIABLES[attribute.node.name]
            if allowed is None or attribute.attr not in allowed:
                name = f"{attribute.node.name}.{attribute.attr}"
                raise TemplateRefused("unknown_variable", attribute.lineno, name=name)
    for call in ast.find_all(nodes.Call):
        raise TemplateRefused("call_not_allowed", call.lineno)
    for used in ast.find_all(nodes.Filter):
        if used.name not in ALLOWED_FILTERS:
            raise TemplateRefused("filter_not_allowed", used.lineno, name=used.name)


@dataclass(frozen=True)
class CompiledTemplate:
    source: str
    html: bool
    _template: Any

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with the documented variables, within every limit above; a render that
        breaks one, or fails, raises RenderLimitExceeded with its code."""
        budget = _Budget(deadline=time.thread_time() + MAX_RENDER_SECONDS)
        token = _budget.set(budget)
        size = 0
        parts: list[str] = []
        template = self._template
        try:
            # The compiled template's own generator, without Template.generate's wrapper (a
            # second generator frame for each of the hundred pieces of a message, there only to
            # rewrite an error's traceback, and every error becomes a code below).
            for chunk in template.root_render_func(template.new_context(dict(variables))):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderLimitExceeded("output_too_large", limit=MAX_OUTPUT_CHARS)
                budget.tick()
                parts.append(chunk)
        except RenderLimitExceeded:
            raise
        except SecurityError as exc:
            raise RenderLimitExceeded("not_allowed") from exc
        except (RecursionError, MemoryError) as exc:
            raise RenderLimitExceeded("too_much_work", limit=MAX_WORK_CHARS) from exc
        except Exception as exc:  # a template error is the author's to fix, never a crash
            raise RenderLimitExceeded("render_error", detail=type(exc).__name__) from exc
        finally:
            _budget.reset(token)
        return "".join(parts)


def compile_template(source: str, html: bool) -> CompiledTemplate:
    """Compile `source`, or raise TemplateRefused with the line and the reason."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateRefused("too_long", limit=MAX_SOURCE_CHARS)
    env = _HTML_ENV if html else _TEXT_ENV
    try:
        ast = env.parse(source)
        _check_shape(ast)
        _check_variables(ast)
        template = env.from_string(_Instrument().visit(ast))
    except TemplateSyntaxError as exc:
        raise TemplateRefused("syntax_error", exc.lineno, detail=exc.message or "") from exc
    except (RecursionError, SyntaxError, MemoryError) as exc:
        raise TemplateRefused("too_deeply_nested", limit=MAX_EXPRESSION_DEPTH) from exc
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
