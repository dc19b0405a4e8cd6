"""What rendering a block document costs per version save or live preview: MJML (MRML) to
email HTML, the plain-text part, and compiling the result in the sandbox."""

import time

from portal.content import blocks, starters
from portal.delivery.render import compile_template, sample_variables
from tests.benchmarks.conftest import report


def test_block_render_time_per_version():
    documents = [blocks.clean_document(t.fields()["blocks"]) for t in starters.TEMPLATES]
    # A long newsletter: every template's sections one after another (about 40 blocks).
    documents.append({"sections": [s for d in documents for s in d["sections"]]})
    rounds = 50
    blocks.render_html(documents[0])  # the first call loads MRML's tables: not what a save costs
    for label, document in (("template", documents[0]), ("long_newsletter", documents[-1])):
        started = time.perf_counter()
        for _ in range(rounds):
            blocks.render_html(document, "预览文本")
        report(f"block_mjml_render_{label}_ms", round((time.perf_counter() - started) / rounds * 1000, 2))
        started = time.perf_counter()
        for _ in range(rounds):
            html = blocks.render_html(document, "预览文本")
            blocks.render_text(document)
            compile_template(html, html=True).render(sample_variables())
        report(f"block_version_save_and_preview_{label}_ms", round((time.perf_counter() - started) / rounds * 1000, 2))
    report("block_count_long_newsletter", sum(len(s["blocks"]) for s in documents[-1]["sections"]))
