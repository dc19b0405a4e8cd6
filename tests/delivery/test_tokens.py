"""Signed tracking tokens and the per-recipient link rewriting."""

from __future__ import annotations

import re

import pytest
from itsdangerous import BadData, URLSafeSerializer

from portal.delivery.tokens import (
    SALT_CLICK,
    SALT_LINK,
    SALT_OPEN,
    SALT_UNSUBSCRIBE,
    LinkTracker,
    Recipient,
    TrackingTokens,
)

BASE = "https://mkt.example.com"
HTML = """<html><body>
<a href="https://www.example.com/a?x=1&amp;y=2">A</a>
<a class="cta" href='http://example.com/b'>B</a>
<a href=https://example.com/c>C</a>
<a href="mailto:sales@example.com">mail</a>
<a href="#top">top</a>
<a href="tel:+8613800138000">call</a>
<a href="https://mkt.example.com/u/UNSUB">unsubscribe</a>
<img src="https://cdn.example.com/logo.png">
</body></html>"""


@pytest.fixture
def tokens():
    return TrackingTokens("a-secret")


def hrefs(html: str) -> list[str]:
    return re.findall(r"""href=["']?([^"'\s>]+)""", html)


def test_tokens_round_trip_for_each_purpose(tokens):
    assert tokens.read_open(tokens.open_token(5, 9)) == Recipient(5, 9)
    assert tokens.read_click(tokens.click_token(5, 9), tokens.link_token("https://e.com/")) == (
        Recipient(5, 9),
        "https://e.com/",
    )
    target = tokens.read_unsubscribe(tokens.unsubscribe_token(None, 9))
    assert (target.delivery_id, target.contact_id, target.is_test) == (None, 9, False)
    assert tokens.read_unsubscribe(tokens.test_unsubscribe_token(4)).is_test


def test_a_token_is_worthless_for_another_purpose(tokens):
    open_token = tokens.open_token(5, 9)
    assert tokens.read_unsubscribe(open_token) is None
    assert tokens.read_click(open_token, tokens.link_token("https://e.com/")) is None
    assert tokens.read_open(tokens.unsubscribe_token(5, 9)) is None


def test_a_token_signed_with_another_secret_is_refused(tokens):
    assert tokens.read_open(TrackingTokens("other").open_token(5, 9)) is None


RECIPIENTS = [(5, 9), (None, 9), (0, 0), (123_456_789, 987_654), (9_223_372_036_854_775_807, 1)]
SALTS = {"open_token": SALT_OPEN, "click_token": SALT_CLICK, "unsubscribe_token": SALT_UNSUBSCRIBE}


@pytest.mark.parametrize("method", sorted(SALTS))
def test_recipient_tokens_are_the_bytes_itsdangerous_makes(tokens, method):
    # Links sent before the tokens were made without itsdangerous read exactly as new ones.
    serializer = URLSafeSerializer("a-secret", salt=SALTS[method])
    for recipient in RECIPIENTS:
        assert getattr(tokens, method)(*recipient) == serializer.dumps(list(recipient))


def test_a_recipient_token_itsdangerous_would_compress_reads_back_both_ways(tokens):
    # Ids of long repeated runs are the only ones itsdangerous zlib-compresses: its token
    # (already sent) and ours (left uncompressed) both name the recipient.
    ids = (1_111_111_111_111_111_111, 2_222_222_222_222_222_222)
    theirs = URLSafeSerializer("a-secret", salt=SALT_OPEN).dumps(list(ids))
    assert theirs.startswith(".")
    assert tokens.read_open(theirs) == Recipient(*ids)
    assert tokens.read_open(tokens.open_token(*ids)) == Recipient(*ids)
    target = tokens.read_unsubscribe(tokens.unsubscribe_token(*ids))
    assert (target.delivery_id, target.contact_id) == ids


def test_a_forged_recipient_token_is_refused(tokens):
    payload, signature = tokens.open_token(5, 9).split(".")
    other_payload = tokens.open_token(6, 9).split(".")[0]
    assert tokens.read_open(f"{other_payload}.{signature}") is None
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    assert tokens.read_open(f"{payload}.{flipped}") is None


def _itsdangerous_reads(serializer: URLSafeSerializer, token: str):
    try:
        return ("read", serializer.loads(token))
    except (BadData, ValueError, UnicodeError):
        return ("refused",)


def _we_read(tokens: TrackingTokens, signer_name: str, token: str):
    try:
        return ("read", getattr(tokens, signer_name).loads(token))
    except (BadData, ValueError, UnicodeError):
        return ("refused",)


def test_tokens_are_read_as_itsdangerous_reads_them(tokens):
    # The endpoints check signatures with the key derived once: what they read or refuse is
    # exactly what itsdangerous would, for good tokens, tampered ones and odd shapes.
    url = "https://www.example.com/offer?x=1"
    theirs = URLSafeSerializer("a-secret", salt=SALT_OPEN)
    good = [tokens.open_token(5, 9), theirs.dumps([1_111_111_111_111_111_111, 2_222_222_222_222_222_222])]
    payload, signature = good[0].split(".")
    shapes = [
        *good,
        f"{payload}.{signature}==",  # padding itsdangerous adds back anyway
        f"{payload}.{signature[:-1]}",
        f"{payload}.{signature}\u00e9",  # a character base64 decoding drops
        f"{payload}.",
        f".{signature}",
        payload,
        "",
        ".",
        f"{payload}x.{signature}",
        f"{theirs.dumps('not ids')}",
        f"{payload}.{signature}.{signature}",
        "@@@." + signature,
        URLSafeSerializer("other", salt=SALT_OPEN).dumps([5, 9]),
        URLSafeSerializer("a-secret", salt=SALT_LINK).dumps(url),
        "\ud800." + signature,
    ]
    for token in shapes:
        assert _we_read(tokens, "_open_signer", token) == _itsdangerous_reads(theirs, token), token
    link = URLSafeSerializer("a-secret", salt=SALT_LINK)
    for token in (tokens.link_token(url), tokens.link_token(url)[:-2], tokens.open_token(5, 9)):
        assert _we_read(tokens, "_link_signer", token) == _itsdangerous_reads(link, token), token


def test_rewrite_sends_every_http_link_through_the_click_redirect(tokens):
    html = LinkTracker(tokens, BASE).rewrite(HTML, 5, 9)
    tracked = [h for h in hrefs(html) if h.startswith(f"{BASE}/t/c/")]
    assert len(tracked) == 3
    destinations = []
    for href in tracked:
        click, link = href[len(f"{BASE}/t/c/") :].split("/")
        recipient, url = tokens.read_click(click, link)
        assert recipient == Recipient(5, 9)
        destinations.append(url)
    # HTML entities are decoded: the redirect goes where the reader's browser would have gone.
    assert destinations == [
        "https://www.example.com/a?x=1&y=2",
        "http://example.com/b",
        "https://example.com/c",
    ]


def test_rewrite_leaves_mailto_anchors_phone_and_unsubscribe_links_alone(tokens):
    html = LinkTracker(tokens, BASE).rewrite(HTML, 5, 9)
    for untouched in ("mailto:sales@example.com", "#top", "tel:+8613800138000", f"{BASE}/u/UNSUB"):
        assert f'href="{untouched}"' in html
    assert 'src="https://cdn.example.com/logo.png"' in html


def test_rewrite_leaves_the_given_unsubscribe_url_alone_wherever_it_points(tokens):
    html = '<a href="https://other.example/unsub/1">u</a>'
    out = LinkTracker(tokens, BASE).rewrite(html, 5, 9, unsubscribe_url="https://other.example/unsub/1", pixel=False)
    assert out == html


def test_rewrite_adds_the_open_pixel_before_the_body_end(tokens):
    html = LinkTracker(tokens, BASE).rewrite(HTML, 5, 9)
    pixel = re.search(r'<img src="([^"]+)" width="1" height="1"[^>]*></body>', html)
    assert pixel is not None
    token = pixel.group(1).removeprefix(f"{BASE}/t/o/").removesuffix(".gif")
    assert tokens.read_open(token) == Recipient(5, 9)


def test_rewrite_appends_the_pixel_when_there_is_no_body_tag(tokens):
    html = LinkTracker(tokens, BASE).rewrite("<p>hi</p>", 5, 9)
    assert html.startswith("<p>hi</p><img ")


def test_each_recipient_gets_their_own_click_token(tokens):
    tracker = LinkTracker(tokens, BASE)
    first = hrefs(tracker.rewrite(HTML, 5, 9, pixel=False))[0]
    second = hrefs(tracker.rewrite(HTML, 6, 10, pixel=False))[0]
    assert first != second
    # ... but the signed destination is shared (signed once per distinct URL).
    assert first.rsplit("/", 1)[1] == second.rsplit("/", 1)[1]


def test_prepared_template_tracks_literal_links_and_leaves_template_built_ones_for_later(tokens):
    from portal.delivery.render import compile_template
    from portal.delivery.tokens import LinkTracker

    tracker = LinkTracker(tokens, "https://mkt.example.com")
    source = (
        '<a href="https://shop.example.com/a?x=1&amp;y=2">A</a>'
        '<a href="{{ unsubscribe_url }}">退订</a><a href="mailto:sales@example.com">mail</a>'
    )
    prepared, dynamic = tracker.prepare(source)
    assert not dynamic  # the unsubscribe link is the portal's own, not a tracked one
    rendered = compile_template(prepared, html=True).render({"unsubscribe_url": "https://mkt.example.com/u/tok"})
    html = tracker.fill(rendered, 7, 42)
    click = html.split('href="', 1)[1].split('"', 1)[0]
    click_token, link_token = click.removeprefix("https://mkt.example.com/t/c/").split("/")
    assert tokens.read_click(click_token, link_token) == ((7, 42), "https://shop.example.com/a?x=1&y=2")
    assert 'href="https://mkt.example.com/u/tok"' in html and 'href="mailto:sales@example.com"' in html
    assert "\x00" not in html
    assert tracker.prepare('<a href="https://x.example.com/{{ contact.city }}">x</a>')[1]  # built by the template


def test_only_a_click_of_ours_gets_its_link_read_and_kept(tokens):
    link = tokens.link_token("https://example.com/a")
    assert tokens.read_click("forged.token", link) is None
    assert tokens.read_click("forged.token", "x" * 8000) is None
    assert tokens._read_link.cache_info().currsize == 0
    assert tokens.read_click(tokens.click_token(7, 3), link) == (Recipient(7, 3), "https://example.com/a")
    assert tokens._read_link.cache_info().currsize == 1
