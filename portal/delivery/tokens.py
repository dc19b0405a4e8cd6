"""Signed tracking tokens and the per-recipient link rewriting of an email's HTML.

Every token is signed with SECRET_KEY and a salt of its own purpose, so a token made for one
purpose is worthless for another:

    open          (delivery id, contact id)          /t/o/<token>.gif
    click         (delivery id, contact id)  +       /t/c/<recipient token>/<link token>
    link          the destination URL, signed once per distinct URL of the approved
                  version; a click only ever redirects to a URL we signed, so the click
                  endpoint is no open redirect
    unsubscribe   (delivery id, contact id)          /u/<token>
    test unsub.   (test send id): shows the pages, unsubscribes nobody

Until the deliveries ledger exists the delivery id may be None; the contact id is what the
endpoints act on. Tokens do not expire: an unsubscribe link must keep working for years.

The recipient tokens (open, click, unsubscribe) are itsdangerous `URLSafeSerializer` tokens;
a sender makes three per message, so they are made here without its per-call work (deriving
the key, trying zlib on a dozen bytes, JSON): the same bytes for every id of a real ledger, so
links already sent and links sent now read alike. The tracking endpoints read one or two
tokens per request, the busiest path of the portal: a token's signature is checked with the
key derived once, and its payload read by itsdangerous; a token that fails that check goes
through itsdangerous whole, which refuses it (or reads it, were it ever signed another way).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html as html_lib
import re
import secrets
from typing import Any, NamedTuple

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.encoding import base64_decode

SALT_OPEN = "delivery.open"
SALT_CLICK = "delivery.click"
SALT_LINK = "delivery.link"
SALT_UNSUBSCRIBE = "delivery.unsubscribe"
SALT_UNSUBSCRIBE_TEST = "delivery.unsubscribe.test"
# Link tokens whose reading each process keeps (a token is a few hundred bytes).
LINKS_KEPT = 4096


class Recipient(NamedTuple):
    delivery_id: int | None
    contact_id: int


class UnsubscribeTarget(NamedTuple):
    delivery_id: int | None
    contact_id: int | None
    # A test send's link: the pages work, nobody is unsubscribed.
    test_send_id: int | None = None

    @property
    def is_test(self) -> bool:
        return self.test_send_id is not None


def _ids(value: Any) -> Recipient | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and (value[0] is None or type(value[0]) is int)
        and type(value[1]) is int
    ):
        return Recipient(value[0], value[1])
    return None


class _Signer:
    """One serializer's tokens made and read with its HMAC key derived once (by itsdangerous
    itself).

    `dumps`: `serializer.dumps([delivery_id, contact_id])` in about 2 µs instead of 40: the HMAC
    key is derived once (by itsdangerous itself) and the payload is the compact JSON of two
    integers, base64url without padding, signed with HMAC-SHA1 over it, as itsdangerous does.

    itsdangerous would zlib-compress a payload that shrinks by two bytes or more, which two
    ids of up to 19 digits only do when made of long repeated runs; such a payload is left
    uncompressed here, which itsdangerous reads all the same (it decompresses only payloads
    marked with a leading "."). Anything but two plain ints goes through itsdangerous."""

    def __init__(self, serializer: URLSafeSerializer) -> None:
        self._serializer = serializer
        self._mac = hmac.new(serializer.make_signer().derive_key(), digestmod=hashlib.sha1)

    def dumps(self, delivery_id: int | None, contact_id: int) -> str:
        if type(contact_id) is not int or (delivery_id is not None and type(delivery_id) is not int):
            return self._serializer.dumps([delivery_id, contact_id])
        first = "null" if delivery_id is None else delivery_id
        payload = base64.urlsafe_b64encode(f"[{first},{contact_id}]".encode("ascii")).rstrip(b"=")
        mac = self._mac.copy()
        mac.update(payload)
        signature = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
        return (payload + b"." + signature).decode("ascii")

    def loads(self, token: str) -> Any:
        """`serializer.loads(token)` in a few µs instead of 18: what itsdangerous's unsign does
        (the value before the last ".", the signature after it decoded its way and compared in
        constant time), with the key derived once; the payload read by itsdangerous itself.
        Raises BadData as itsdangerous would."""
        signed = token.encode("utf-8")
        value, sep, signature = signed.rpartition(b".")
        if sep:
            try:
                expected = base64_decode(signature)
            except BadData:
                expected = None
            if expected is not None:
                mac = self._mac.copy()
                mac.update(value)
                if hmac.compare_digest(mac.digest(), expected):
                    return self._serializer.load_payload(value)
        return self._serializer.loads(token)


class TrackingTokens:
    """Makes and reads the tokens; build one per process (see `tracking_tokens`)."""

    def __init__(self, secret_key: str) -> None:
        def serializer(salt: str) -> URLSafeSerializer:
            return URLSafeSerializer(secret_key, salt=salt)

        self._open = serializer(SALT_OPEN)
        self._click = serializer(SALT_CLICK)
        self._link = serializer(SALT_LINK)
        self._unsubscribe = serializer(SALT_UNSUBSCRIBE)
        self._unsubscribe_test = serializer(SALT_UNSUBSCRIBE_TEST)
        self._open_signer = _Signer(self._open)
        self._click_signer = _Signer(self._click)
        self._link_signer = _Signer(self._link)  # reads links; they are made by itsdangerous
        # A campaign's clicks carry the same few link tokens over and over: each is read once.
        self._read_link = functools.lru_cache(maxsize=LINKS_KEPT)(self._read_link_uncached)
        self._unsubscribe_signer = _Signer(self._unsubscribe)

    # -- making -------------------------------------------------------------------------
    def open_token(self, delivery_id: int | None, contact_id: int) -> str:
        return self._open_signer.dumps(delivery_id, contact_id)

    def click_token(self, delivery_id: int | None, contact_id: int) -> str:
        return self._click_signer.dumps(delivery_id, contact_id)

    def link_token(self, url: str) -> str:
        return self._link.dumps(url)

    def unsubscribe_token(self, delivery_id: int | None, contact_id: int) -> str:
        return self._unsubscribe_signer.dumps(delivery_id, contact_id)

    def test_unsubscribe_token(self, test_send_id: int) -> str:
        return self._unsubscribe_test.dumps(test_send_id)

    # -- reading: None for anything not made by us for this purpose ------------------------
    def read_open(self, token: str) -> Recipient | None:
        return _ids(self._loads(self._open_signer, token))

    def read_click(self, click_token: str, link_token: str) -> tuple[Recipient, str] | None:
        recipient = _ids(self._loads(self._click_signer, click_token))
        if recipient is None:
            # Only a click of ours gets its link read: the links kept (_read_link) are then
            # never filled by forged requests.
            return None
        url = self._read_link(link_token)
        return None if url is None else (recipient, url)

    def _read_link_uncached(self, link_token: str) -> str | None:
        url = self._loads(self._link_signer, link_token)
        return url if isinstance(url, str) and _is_http(url) else None

    def read_unsubscribe(self, token: str) -> UnsubscribeTarget | None:
        recipient = _ids(self._loads(self._unsubscribe, token))
        if recipient is not None:
            return UnsubscribeTarget(recipient.delivery_id, recipient.contact_id)
        test_send_id = self._loads(self._unsubscribe_test, token)
        if type(test_send_id) is int:
            return UnsubscribeTarget(None, None, test_send_id)
        return None

    @staticmethod
    def _loads(serializer: URLSafeSerializer | _Signer, token: str) -> Any:
        try:
            return serializer.loads(token)
        except (BadData, ValueError, UnicodeError):
            return None


def tracking_tokens(app: Any) -> TrackingTokens:
    """The app's `TrackingTokens`, made once per process from its SECRET_KEY."""
    tokens = app.extensions.get("delivery.tokens")
    if tokens is None:
        tokens = app.extensions["delivery.tokens"] = TrackingTokens(app.config["SECRET_KEY"])
    return tokens


def _is_http(url: str) -> bool:
    return url[:7].lower() == "http://" or url[:8].lower() == "https://"


# The href of an <a> or <area> tag, double-, single- or un-quoted.
_HREF = re.compile(
    r"""(<(?:a|area)\b[^>]*?\shref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s>"']+))""",
    re.IGNORECASE,
)


class LinkTracker:
    """Rewrites an email's rendered HTML for one recipient: every http(s) link goes through
    the click redirect and an open pixel is added. Make one per (step, version) and call
    `rewrite` per recipient; link tokens are signed once per distinct URL."""

    MAX_CACHED_LINKS = 10_000

    def __init__(self, tokens: TrackingTokens, base_url: str) -> None:
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self._skip_prefixes = (self.base_url + "/u/", self.base_url + "/t/")
        self._link_tokens: dict[str, str] = {}
        # Stands for the recipient's click prefix in a prepared template; random, so that no
        # template or contact value can contain it.
        self._marker = f"\x00{secrets.token_hex(8)}\x00"
        # href as written in the HTML -> its link token, or None for a link left alone.
        self._href_tokens: dict[str, str | None] = {}

    def link_token(self, url: str) -> str:
        token = self._link_tokens.get(url)
        if token is None:
            token = self.tokens.link_token(url)
            if len(self._link_tokens) < self.MAX_CACHED_LINKS:
                self._link_tokens[url] = token
        return token

    def open_pixel_url(self, delivery_id: int | None, contact_id: int) -> str:
        return f"{self.base_url}/t/o/{self.tokens.open_token(delivery_id, contact_id)}.gif"

    def unsubscribe_url(self, delivery_id: int | None, contact_id: int) -> str:
        return f"{self.base_url}/u/{self.tokens.unsubscribe_token(delivery_id, contact_id)}"

    _TEMPLATE_CODE = re.compile(r"\{[{%#]")
    _UNSUBSCRIBE_VALUE = re.compile(r"^\{\{-?\s*unsubscribe_url\s*-?\}\}$")

    def prepare(self, source: str) -> tuple[str, bool]:
        """The approved HTML template with every literal http(s) link already pointing at
        the click redirect: its signed link token in place and, for the recipient's part, a
        random marker that `fill` replaces after rendering (one C-speed replace instead of
        a template variable per link or a regex over each recipient's HTML). Returns
        (prepared source, whether links built by template code remain, which `rewrite`
        must still handle after rendering)."""
        dynamic = False

        def replace(match: re.Match[str]) -> str:
            nonlocal dynamic
            raw = match.group(2)
            if raw is None:
                raw = match.group(3) if match.group(3) is not None else match.group(4)
            if self._TEMPLATE_CODE.search(raw):
                dynamic = dynamic or not self._UNSUBSCRIBE_VALUE.match(raw.strip())
                return match.group(0)
            url = (html_lib.unescape(raw) if "&" in raw else raw).strip()
            if not _is_http(url) or url.startswith(self._skip_prefixes):
                return match.group(0)
            return f'{match.group(1)}"{self._marker}{self.link_token(url)}"'

        return _HREF.sub(replace, source), dynamic

    def fill(self, html: str, delivery_id: int | None, contact_id: int) -> str:
        """A prepared template's rendering with this recipient's click prefix in its links."""
        prefix = f"{self.base_url}/t/c/{self.tokens.click_token(delivery_id, contact_id)}/"
        return html.replace(self._marker, prefix)

    def add_pixel(self, html: str, delivery_id: int | None, contact_id: int) -> str:
        """`html` with the open pixel before `</body>` (or at the end)."""
        image = (
            f'<img src="{self.open_pixel_url(delivery_id, contact_id)}" width="1" height="1" '
            'alt="" style="border:0;width:1px;height:1px">'
        )
        end = html.rfind("</body>")
        if end < 0:
            # Only the tail can hold a closing tag in another case: no lowering of 20 KB.
            tail = len(html) - 512 if len(html) > 512 else 0
            found = html[tail:].lower().rfind("</body>")
            end = tail + found if found >= 0 else -1
        if end < 0:
            return html + image
        return html[:end] + image + html[end:]

    def rewrite(
        self,
        html: str,
        delivery_id: int | None,
        contact_id: int,
        *,
        unsubscribe_url: str = "",
        pixel: bool = True,
    ) -> str:
        """`html` with tracked links (not mailto:, anchors, the unsubscribe link or our own
        tracking URLs) and, unless `pixel` is False, the open pixel before `</body>`."""
        prefix = f"{self.base_url}/t/c/{self.tokens.click_token(delivery_id, contact_id)}/"
        skip = self._skip_prefixes

        known = self._href_tokens

        def replace(match: re.Match[str]) -> str:
            raw = match.group(2)
            if raw is None:
                raw = match.group(3) if match.group(3) is not None else match.group(4)
            token = known.get(raw, "")
            if token == "":
                url = (html_lib.unescape(raw) if "&" in raw else raw).strip()
                if not _is_http(url) or url.startswith(skip) or url == unsubscribe_url:
                    token = None
                else:
                    token = self.link_token(url)
                if len(known) < self.MAX_CACHED_LINKS and url != unsubscribe_url:
                    known[raw] = token
            if token is None:
                return match.group(0)
            return f'{match.group(1)}"{prefix}{token}"'

        rewritten = _HREF.sub(replace, html)
        if not pixel:
            return rewritten
        return self.add_pixel(rewritten, delivery_id, contact_id)
