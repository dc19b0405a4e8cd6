"""How fast the sandbox stops every payload class, and what its limits cost a normal message."""

import contextlib
import time

from jinja2.sandbox import ImmutableSandboxedEnvironment

from portal.delivery.render import RenderLimitExceeded, TemplateRefused, compile_template, sample_variables
from tests.benchmarks.conftest import report
from tests.content.conftest import GOOD_HTML
from tests.content.test_sandbox import PAYLOADS


def test_sandbox_stops_payloads_and_costs_little():
    slowest = 0.0
    for _name, source, _outcome, _code in PAYLOADS:
        started = time.perf_counter()
        with contextlib.suppress(TemplateRefused, RenderLimitExceeded):
            compile_template(source, html=True).render(sample_variables())
        slowest = max(slowest, time.perf_counter() - started)
    report("sandbox_payload_stop_max_ms", round(slowest * 1000, 1))
    variables, renders = sample_variables(), 2000
    # Baseline: Jinja's sandbox with none of the limits, on the same message.
    templates = {
        "sandbox_render_unbounded_baseline_us": ImmutableSandboxedEnvironment(autoescape=True).from_string(
            GOOD_HTML * 20
        ),
        "sandbox_render_normal_email_us": compile_template(GOOD_HTML * 20, html=True),
    }
    for name, template in templates.items():
        started = time.perf_counter()
        for _ in range(renders):
            template.render(variables)
        report(name, round((time.perf_counter() - started) / renders * 1e6, 1))
