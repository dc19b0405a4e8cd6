from portal.content.diff import ADDED, CHANGED, REMOVED, SAME, Element, compare_blocks, html_parts, inline, review_diff


def marked(pieces):
    return [(p.text, p.change) for p in pieces]


def test_english_changes_are_marked_by_whole_words():
    assert marked(inline("The quick brown fox jumps", "The quick red fox leaps")) == [
        ("The quick ", SAME),
        ("brown", REMOVED),
        ("red", ADDED),
        (" fox ", SAME),
        ("jumps", REMOVED),
        ("leaps", ADDED),
    ]


def test_chinese_without_spaces_is_compared_by_characters():
    pieces = marked(inline("春季新品发布会，地点上海", "春季新品发布会，地点北京"))
    assert pieces == [("春季新品发布会，地点", SAME), ("上海", REMOVED), ("北京", ADDED)]


def test_blocks_are_aligned_and_a_changed_paragraph_is_compared_inside():
    before = html_parts("<h1>春季新品</h1><p>欢迎参加发布会。</p><p>地址：上海</p>")
    after = html_parts("<h1>春季新品</h1><p>诚挚欢迎参加发布会。</p><p>新增一段说明</p><p>地址：上海</p>")
    blocks = compare_blocks(before.blocks, after.blocks)
    assert [b.change for b in blocks] == [SAME, CHANGED, ADDED, SAME]
    assert ("诚挚", ADDED) in marked(blocks[1].pieces)


def test_images_and_links_are_listed_for_side_by_side():
    parts = html_parts(
        '<p><img src="https://x.example/a.png" alt="海报"><a href="https://x.example/go">立即报名</a></p>'
    )
    assert parts.images == [Element("海报", "https://x.example/a.png")]
    assert parts.links == [Element("立即报名", "https://x.example/go")]


def test_an_sms_diff_compares_the_text_and_keeps_the_source():
    diff = review_diff(
        1,
        "returned",
        "sms",
        ({"sms_text": "会员日八折。回T退订"}, {"sms_text": "会员日七折。回T退订"}),
        ({"sms_text": "会员日八折。回T退订"}, {"sms_text": "会员日七折。回T退订"}),
    )
    assert diff.changed and not diff.blocks
    assert ("八", REMOVED) in marked(diff.fields[0].pieces) and ("七", ADDED) in marked(diff.fields[0].pieces)
    assert ("-会员日八折。回T退订", REMOVED) in [(line, change) for change, line in diff.source]


def test_block_documents_are_compared_block_by_block():
    from portal.content.diff import ADDED, CHANGED, MOVED, REMOVED, SAME, compare_block_documents

    before = [("h", "heading", "春季新品"), ("t", "text", "三款新品"), ("i", "image", "a.png"), ("b", "button", "报名")]
    after = [("t", "text", "三款新品"), ("h", "heading", "夏季新品"), ("b", "button", "报名"), ("n", "divider", "")]
    changes = {(c.kind, c.change) for c in compare_block_documents(before, after)}
    assert ("heading", CHANGED) in changes
    assert ("image", REMOVED) in changes
    assert ("divider", ADDED) in changes
    assert ("button", SAME) in changes
    assert ("text", MOVED) in changes  # the heading stays in order with the button; the text went up
