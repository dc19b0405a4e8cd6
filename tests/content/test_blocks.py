"""The block renderer: every block kind, personalisation inside blocks, escaping of contact data,
the plain-text part with its URLs, and the editor's operations."""

import re

import pytest

from portal.content import blocks
from portal.delivery.render import compile_template, sample_variables


def document(*specs, columns=1):
    section = blocks.new_section(columns)
    section["blocks"] = [{**blocks.new_block(kind, column), **settings} for kind, column, settings in specs]
    return blocks.clean_document({"sections": [section]})


def rendered(doc, contact=None, preheader=""):
    variables = sample_variables()
    if contact is not None:
        variables["contact"] = {**variables["contact"], **contact}
    return compile_template(blocks.render_html(doc, preheader), html=True).render(variables)


def visible(html):
    """The HTML without its head (styles), to look at what the body shows."""
    return re.sub(r"<head>.*?</head>", "", html, flags=re.S)


def test_heading_is_escaped_and_personalised():
    html = rendered(document(("heading", 0, {"text": '你好 {{ contact.name | default("客户") }} <b>', "level": "2"})))
    assert "你好 王小明 &lt;b&gt;" in html
    assert "<h2" in html


def test_text_block_keeps_bold_italic_links_and_lists_and_drops_scripts():
    rich = (
        '<p><b>粗体</b> <i>斜体</i> <a href="https://www.example.com/a" onclick="x()">链接</a></p>'
        '<ul><li>一</li></ul><ol><li>二</li></ol><script>alert(1)</script><a href="javascript:alert(1)">坏</a>'
    )
    html = visible(rendered(document(("text", 0, {"html": rich}))))
    for kept in ("<b>粗体</b>", "<i>斜体</i>", 'href="https://www.example.com/a"', "<ul><li>一</li></ul>", "<ol>"):
        assert kept in html
    assert "onclick" not in html and "<script" not in html and "javascript:" not in html


def test_image_block_has_its_url_alt_text_link_and_width():
    doc = document(
        (
            "image",
            0,
            {
                "src": "https://cdn.example.com/m/abc.png",
                "alt": '新品 "图"',
                "href": "https://x.example.com",
                "width": 300,
            },
        )
    )
    html = visible(rendered(doc))
    assert 'src="https://cdn.example.com/m/abc.png"' in html
    assert 'alt="新品 &quot;图&quot;"' in html
    assert 'href="https://x.example.com"' in html
    assert "300" in html


def test_image_with_an_unsafe_address_is_left_out():
    html = visible(rendered(document(("image", 0, {"src": "javascript:alert(1)", "alt": "x"}))))
    assert "<img" not in html and "javascript:" not in html


def test_button_divider_spacer_and_social_links():
    doc = document(
        ("button", 0, {"text": "立即报名", "href": "https://www.example.com/go", "background": "#ff0000"}),
        ("divider", 0, {"color": "#00ff00"}),
        ("spacer", 0, {"height": 33}),
        ("social", 0, {"links": "微博 https://weibo.com/acme\n坏的 javascript:alert(1)"}),
    )
    html = visible(rendered(doc))
    assert "立即报名" in html and 'href="https://www.example.com/go"' in html and "#ff0000" in html
    assert "#00ff00" in html
    assert "33px" in html
    assert 'href="https://weibo.com/acme"' in html and "javascript:" not in html


def test_footer_always_carries_the_unsubscribe_link_and_the_address():
    html = visible(rendered(document(("footer", 0, {"address": "上海市世纪大道 100 号", "unsubscribe_text": ""}))))
    assert 'href="https://portal.example.com/u/preview"' in html  # the sample's unsubscribe_url
    assert "上海市世纪大道 100 号" in html and "退订" in html


def test_html_block_is_sanitised_but_keeps_its_variables():
    doc = document(
        ("html", 0, {"html": '<p style="color:red" onmouseover="x">{{ contact.company }}</p><iframe></iframe>'})
    )
    html = visible(rendered(doc))
    assert "上海云启科技有限公司" in html
    assert "onmouseover" not in html and "<iframe" not in html


def test_contact_data_is_escaped_everywhere_it_appears():
    doc = document(
        ("heading", 0, {"text": "{{ contact.name }}"}),
        ("text", 0, {"html": "<p>{{ contact.company }}</p>"}),
        ("button", 0, {"text": "{{ contact.name }}", "href": "https://www.example.com/?c={{ contact.city }}"}),
    )
    evil = {"name": "<script>alert(1)</script>", "company": '"><img src=x onerror=alert(1)>', "city": '"onmouseover="x'}
    html = visible(rendered(doc, contact=evil))
    assert "<script>alert(1)</script>" not in html
    assert "<img src=x" not in html
    assert '"onmouseover="x' not in html
    assert "&lt;script&gt;" in html


def test_columns_render_side_by_side_on_desktop_and_stack_on_phones():
    doc = document(("heading", 0, {"text": "左"}), ("heading", 1, {"text": "右"}), columns=2)
    html = rendered(doc)
    assert "mj-column-per-50" in html  # two half-width columns
    assert "@media only screen and (min-width:480px)" in html  # below it, columns stack
    assert html.index("左") < html.index("右")


def test_preheader_is_the_hidden_preview_text():
    html = rendered(document(("heading", 0, {"text": "x"})), preheader="{{ contact.name }}，本周精选")
    assert "王小明，本周精选" in html


def test_plain_text_keeps_every_link_url():
    doc = document(
        ("heading", 0, {"text": "标题"}),
        ("text", 0, {"html": '<p>请看<a href="https://www.example.com/a">详情</a></p>'}),
        ("button", 0, {"text": "报名", "href": "https://www.example.com/go"}),
        ("image", 0, {"src": "https://cdn.example.com/m/a.png", "alt": "海报"}),
        ("footer", 0, {"address": "上海"}),
    )
    text = blocks.render_text(doc)
    assert "详情 (https://www.example.com/a)" in text
    assert "报名 (https://www.example.com/go)" in text
    assert "[海报]" in text
    assert "退订 ({{ unsubscribe_url }})" in text


def test_unknown_kinds_and_bad_settings_are_refused_or_bounded():
    with pytest.raises(blocks.BlocksRefused):
        blocks.clean_document({"sections": [{"columns": 1, "blocks": [{"kind": "video"}]}]})
    with pytest.raises(blocks.BlocksRefused):
        blocks.clean_document({"not": "a document"})
    doc = blocks.clean_document(
        {
            "sections": [
                {"columns": 9, "blocks": [{"kind": "heading", "color": "red;x", "padding": "999", "align": "up"}]}
            ]
        }
    )
    section = doc["sections"][0]
    assert section["columns"] == 3
    assert section["blocks"][0]["color"] == "#1f2d3d" and section["blocks"][0]["padding"] == 80
    assert section["blocks"][0]["align"] == "left"


def test_operations_add_duplicate_delete_and_move_sections():
    doc = blocks.starter_document()
    first, second = doc["sections"][0]["id"], doc["sections"][1]["id"]
    doc = blocks.apply_operation(doc, f"add:{first}:0", "divider")
    assert doc["sections"][0]["blocks"][-1]["kind"] == "divider"
    heading = doc["sections"][0]["blocks"][0]["id"]
    doc = blocks.apply_operation(doc, f"duplicate:{heading}")
    assert [b["kind"] for b in doc["sections"][0]["blocks"][:2]] == ["heading", "heading"]
    assert doc["sections"][0]["blocks"][1]["id"] != heading
    doc = blocks.apply_operation(doc, f"delete:{heading}")
    assert heading not in {b["id"] for b in doc["sections"][0]["blocks"]}
    doc = blocks.apply_operation(doc, f"section-up:{second}")
    assert doc["sections"][0]["id"] == second
    doc = blocks.apply_operation(doc, "section:3")
    assert doc["sections"][-1]["columns"] == 3


def test_the_form_posts_blocks_in_page_order_with_their_new_column():
    from werkzeug.datastructures import MultiDict

    form = MultiDict(
        [
            ("s.s1.columns", "2"),
            ("s.s1.background", "#ffffff"),
            ("b.b2.kind", "button"),
            ("b.b2.section", "s1"),
            ("b.b2.column", "1"),
            ("b.b2.text", "后"),
            ("b.b1.kind", "heading"),
            ("b.b1.section", "s1"),
            ("b.b1.column", "0"),
            ("b.b1.text", "前"),
        ]
    )
    doc = blocks.document_from_form(form)
    assert [(b["id"], b["column"]) for b in doc["sections"][0]["blocks"]] == [("b2", 1), ("b1", 0)]


def test_every_portal_template_renders_and_passes_the_sandbox():
    from portal.content import starters

    assert {t.key for t in starters.TEMPLATES} == {"newsletter", "webinar", "whitepaper", "nurture", "reengagement"}
    for template in starters.TEMPLATES:
        doc = blocks.clean_document(template.fields()["blocks"])
        html = rendered(doc, preheader=template.preheader)
        assert "https://portal.example.com/u/preview" in html
        compile_template(template.subject, html=False).render(sample_variables())
