import pytest

from portal.delivery.render import (
    RenderLimitExceeded,
    TemplateRefused,
    compile_template,
    contact_variables,
    sample_variables,
)

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id') }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.application.__globals__ }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ url_for.__globals__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ contact|attr('__class__') }}",
    "{{ '%s'|format(contact) }}",
    "{{ '{0.__class__}'.format(contact) }}",
    "{{ contact.__class__.__init__.__globals__ }}",
    "{{ contact.attributes.__class__ }}",
    "{% for x in range(10**9) %}x{% endfor %}",
    "{{ dict(a=1) }}",
    "{{ contact.name|safe }}",
    "{% set x = contact.__class__ %}{{ x }}",
    "{{ contact['__class__'] }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_known_template_injection_payloads_are_refused_or_inert(payload):
    try:
        template = compile_template(payload, html=True)
    except TemplateRefused:
        return
    # Whatever compiles must render to something harmless, never Python internals.
    try:
        output = template.render(sample_variables())
    except RenderLimitExceeded:
        return
    for leak in ("class", "module", "function", "built-in", "subprocess", "SECRET", "Config", "os."):
        assert leak not in output, (payload, output)


def test_documented_variables_render_with_fallbacks():
    template = compile_template(
        '{{ contact.name | default("客户") }}@{{ contact.company | default("贵公司") }}', html=False
    )
    assert template.render(sample_variables("zh")) == "王小明@上海云启科技有限公司"
    assert template.render(sample_variables("empty")) == "客户@贵公司"


def test_html_templates_escape_contact_values():
    template = compile_template("<p>{{ contact.name }}</p>", html=True)
    html = template.render({"contact": contact_variables({"name": '<script>alert("x")</script>'})})
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_custom_attributes_are_reachable():
    template = compile_template("{{ contact.attributes['职位'] | default('') }}", html=False)
    assert template.render(sample_variables("zh")) == "市场总监"


def test_unknown_variable_is_refused_with_its_line():
    with pytest.raises(TemplateRefused) as refused:
        compile_template("第一行\n第二行 {{ customer.name }}", html=False)
    assert refused.value.line == 2 and "customer" in refused.value.reason


def test_syntax_error_is_refused_with_its_line():
    with pytest.raises(TemplateRefused) as refused:
        compile_template("a\nb\n{% if contact.name %}unclosed", html=False)
    assert refused.value.line == 3


def test_output_size_is_bounded():
    template = compile_template("{% for k in contact.attributes %}{{ contact.attributes[k] }}{% endfor %}", html=False)
    huge = {"contact": {"attributes": {str(i): "x" * 10_000 for i in range(100)}}}
    with pytest.raises(RenderLimitExceeded):
        template.render(huge)


def test_compiled_template_renders_many_contacts():
    template = compile_template("{{ contact.name }}", html=False)
    names = [template.render({"contact": {"name": f"客户{i}"}}) for i in range(1000)]
    assert names[999] == "客户999"


def test_attributes_of_plain_dicts_read_as_the_sandbox_reads_them():
    # The documented variables' keys are looked up directly (render.py's getattr); every
    # answer must be the one Jinja's sandbox gives, for keys, missing keys, dict's own
    # methods and dunders, even where a key shadows one of them.
    from jinja2.runtime import Undefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from portal.delivery.render import _HTML_ENV

    class Mapping(dict):
        pass

    sandbox = ImmutableSandboxedEnvironment()
    sandbox.is_safe_attribute = _HTML_ENV.is_safe_attribute  # the portal's rule: nothing callable
    values = [
        {"name": "王小明", "items": "键", "__class__": "x", "职位": "总监"},
        {},
        Mapping(name="子类"),
        "字符串",
    ]
    names = ["name", "items", "get", "keys", "__class__", "__init__", "职位", "missing", "upper"]
    for value in values:
        for name in names:
            ours, theirs = _HTML_ENV.getattr(value, name), sandbox.getattr(value, name)
            if isinstance(theirs, Undefined):
                assert isinstance(ours, Undefined) and type(ours) is type(theirs), (value, name)
                assert ours._undefined_obj is theirs._undefined_obj
                assert (ours._undefined_name, ours._undefined_hint, ours._undefined_exception) == (
                    theirs._undefined_name,
                    theirs._undefined_hint,
                    theirs._undefined_exception,
                )
            else:
                assert ours == theirs, (value, name)
