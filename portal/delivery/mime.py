"""Email messages built fast and safely: the skeleton once per (step, version), the
recipient's parts per message.

    skeleton = MessageSkeleton(from_header=config["MAIL_FROM"], dkim=DkimSigner.from_config(config))
    for delivery in batch:                     # subject/html/text rendered by the caller
        data = skeleton.build(
            to_email=..., to_name=..., subject=..., html=..., text=...,
            message_id=make_message_id(delivery.id, domain),
            unsubscribe_url=..., unsubscribe_mailto=...,
        )

Everything that comes from a contact or a template is checked or encoded here so that it
can never add a header: control characters (CR, LF, NUL, ...) and Unicode line separators
become spaces, display names and subjects are RFC 2047 encoded whenever they are not plain
ASCII or contain something that looks like an encoded word (`=?utf-8?q?...=0A...?=`), and
addresses, Message-IDs and URLs that are not well formed are refused with `HeaderValueError`.
Bodies travel base64-encoded (line length and 8-bit safety; the boundary cannot occur in
base64 text).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import struct
import time
from email.utils import formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

CRLF = "\r\n"

# Headers covered by the DKIM signature (RFC 8058 requires List-Unsubscribe(-Post)).
DKIM_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)

# C0 controls, DEL, and the characters Python and some mail readers treat as line breaks.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_MESSAGE_ID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")  # printable ASCII without < > or space
_URL = re.compile(r"^(?:https?|mailto):[!-;=?-~]+$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII without ":"


class HeaderValueError(ValueError):
    """A value cannot be put into a header safely (an address, URL or id that is malformed)."""


def clean_text(value: str) -> str:
    """`value` with every control character and line separator replaced by a space."""
    return _UNSAFE.sub(" ", value).strip()


# UTF-8 bytes per RFC 2047 encoded word: 39 bytes make 52 base64 characters, a 64-character
# word, so that even the first line ("Subject: " + word) stays under 78 characters.
_WORD_BYTES = 39


def encoded_words(value: str, word_bytes: int = _WORD_BYTES) -> str:
    """`value` as RFC 2047 "B" encoded words (UTF-8), split between characters and folded
    with CRLF + space. The same result as `email.header.Header(...).encode()` in meaning,
    without its per-character machinery: this runs for every recipient's subject and name."""
    words = []
    chunk = bytearray()
    for character in value:
        encoded = character.encode("utf-8")
        if len(chunk) + len(encoded) > word_bytes:
            words.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk or not words:
        words.append(chunk)
    return (CRLF + " ").join(f"=?utf-8?b?{base64.b64encode(bytes(w)).decode('ascii')}?=" for w in words)


@lru_cache(maxsize=4096)
def encode_text(value: str, header_name: str = "Subject") -> str:
    """A header value for free text (a subject): cleaned, and RFC 2047 encoded (UTF-8,
    folded with CRLF) unless it is short plain ASCII that cannot be mistaken for an
    encoded word."""
    value = clean_text(value)
    if value.isascii() and "=?" not in value and len(value) + len(header_name) < 76:
        return value
    return encoded_words(value)


@lru_cache(maxsize=4096)
def _encode_display_name(name: str) -> str:
    if name.isascii() and "=?" not in name and len(name) < 60:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'
    # A name of up to 15 Chinese characters stays one encoded word (45 bytes, 72 characters):
    # some readers show a space where a name was split into two words.
    return encoded_words(name, 45)


def check_address(address: str) -> str:
    """`address` if it is a plain ASCII addr-spec, else `HeaderValueError`."""
    if not _ADDRESS.match(address) or ".." in address:
        raise HeaderValueError(f"not a deliverable email address: {address!r}")
    return address


def format_address(address: str, name: str = "") -> str:
    """`"Name" <address>` with the name cleaned and encoded, or the bare `<address>`."""
    check_address(address)
    name = clean_text(name)
    if not name:
        return f"<{address}>"
    return f"{_encode_display_name(name)} <{address}>"


def make_message_id(delivery_id: int | str, domain: str) -> str:
    """A Message-ID unique to one delivery (the random part keeps a retried message from
    colliding with a copy that got through)."""
    return f"<d{delivery_id}.{secrets.token_hex(6)}@{domain}>"


def unsubscribe_mailto(address: str, token: str) -> str:
    """The `mailto:` alternative of List-Unsubscribe (config `UNSUBSCRIBE_MAILTO`): the
    token in the subject tells the mailbox's processor whom to unsubscribe."""
    check_address(address)
    return f"mailto:{address}?subject=unsubscribe%20{quote(token, safe='')}"


def _check_message_id(value: str) -> str:
    if not _MESSAGE_ID.match(value):
        raise HeaderValueError(f"malformed Message-ID: {value!r}")
    return value


def _check_url(value: str) -> str:
    if not _URL.match(value):
        raise HeaderValueError(f"URL not safe for a header: {value!r}")
    return value


@lru_cache(maxsize=256)
def _base64_lines(count: int) -> struct.Struct:
    """Cuts `count` lines of 76 base64 characters out of an encoded body in one C call."""
    return struct.Struct("76s" * count)


def _body(content: str) -> bytes:
    """`content` with CRLF line ends, UTF-8, base64 in lines of 76 characters."""
    # Line ends are normalised in the UTF-8 bytes, where CR and LF are the same single bytes
    # and a replace that finds nothing costs nothing (on a str of Chinese text it copies).
    data = content.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    # One C call for the whole body (base64.encodebytes loops in Python per line), then the
    # lines cut out by a precompiled struct: a slice per line in Python cost as much as the
    # encoding itself. Bodies of one template differ by a few lines at most, so the structs
    # cached by line count are reused from message to message.
    encoded = binascii.b2a_base64(data.replace(b"\n", b"\r\n"), newline=False)
    full = len(encoded) // 76
    lines = list(_base64_lines(full).unpack_from(encoded)) if full else []
    if len(encoded) > 76 * full:
        lines.append(encoded[76 * full :])
    return b"\r\n".join(lines) + b"\r\n"


class MessageSkeleton:
    """What every message of one (step, version) shares, prepared once: the From header,
    fixed headers, the MIME boundary and an optional DKIM signer. `build` is cheap."""

    def __init__(
        self,
        from_header: str,
        *,
        reply_to: str = "",
        extra_headers: dict[str, str] | None = None,
        dkim: DkimSigner | None = None,
    ) -> None:
        from_name, from_address = parseaddr(from_header)
        self.envelope_from = check_address(from_address)
        self.dkim = dkim
        lines = [f"From: {format_address(from_address, from_name)}"]
        if reply_to:
            reply_name, reply_address = parseaddr(reply_to)
            lines.append(f"Reply-To: {format_address(reply_address, reply_name)}")
        for name, value in (extra_headers or {}).items():
            if not _HEADER_NAME.match(name) or _UNSAFE.search(value):
                raise HeaderValueError(f"unsafe fixed header {name!r}")
            lines.append(f"{name}: {encode_text(value, name)}")
        lines.append("MIME-Version: 1.0")
        self._fixed = CRLF.join(lines) + CRLF
        # "=_" cannot occur in base64 text, so the boundary never collides with a body.
        self.boundary = f"=_{secrets.token_hex(12)}"
        self._alternative = f'Content-Type: multipart/alternative; boundary="{self.boundary}"'
        self._part_text = (
            f'--{self.boundary}{CRLF}Content-Type: text/plain; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        ).encode("ascii")
        self._part_html = (
            f'--{self.boundary}{CRLF}Content-Type: text/html; charset="utf-8"{CRLF}'
            f"Content-Transfer-Encoding: base64{CRLF}{CRLF}"
        ).encode("ascii")
        self._closing = f"--{self.boundary}--{CRLF}".encode("ascii")

    def build(
        self,
        *,
        to_email: str,
        to_name: str = "",
        subject: str,
        html: str | None = None,
        text: str | None = None,
        message_id: str,
        unsubscribe_url: str | None = None,
        unsubscribe_mailto: str | None = None,
        date: str | None = None,
    ) -> bytes:
        """The complete message (CRLF line ends), DKIM-signed when a signer is set."""
        if html is None and text is None:
            raise ValueError("a message needs an html or a text part")
        head = [
            self._fixed,
            f"To: {format_address(to_email, to_name)}{CRLF}",
            f"Subject: {encode_text(subject)}{CRLF}",
            f"Date: {date or formatdate()}{CRLF}",
            f"Message-ID: {_check_message_id(message_id)}{CRLF}",
        ]
        targets = []
        if unsubscribe_url:
            targets.append(f"<{_check_url(unsubscribe_url)}>")
        if unsubscribe_mailto:
            targets.append(f"<{_check_url(unsubscribe_mailto)}>")
        if targets:
            head.append(f"List-Unsubscribe: {(',' + CRLF + ' ').join(targets)}{CRLF}")
            if unsubscribe_url:
                head.append(f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}")
        if html is not None and text is not None:
            head.append(f"{self._alternative}{CRLF}{CRLF}")
            message = b"".join(
                [
                    "".join(head).encode("ascii"),
                    self._part_text,
                    _body(text),
                    self._part_html,
                    _body(html),
                    self._closing,
                ]
            )
        else:
            kind, content = ("html", html) if html is not None else ("plain", text)
            head.append(f'Content-Type: text/{kind}; charset="utf-8"{CRLF}')
            head.append(f"Content-Transfer-Encoding: base64{CRLF}{CRLF}")
            message = "".join(head).encode("ascii") + _body(content)  # type: ignore[arg-type]
        if self.dkim is not None:
            message = self.dkim.sign(message)
        return message


class DkimSigner:
    """DKIM-Signature (rsa-sha256, c=relaxed/simple, RFC 6376) over `DKIM_SIGNED_HEADERS`.

    `engine="dkimpy"` signs with dkimpy itself; it computes RSA in pure Python (about 7 ms
    per message for a 2048-bit key here), which would cap a worker near 150 messages/s.
    The default `engine="openssl"` does the same canonicalisation here and the RSA step
    with `cryptography` (OpenSSL, about 0.3 ms); the tests verify both with dkimpy's
    verifier."""

    def __init__(
        self,
        selector: str,
        domain: str,
        private_key_pem: bytes,
        headers: tuple[str, ...] = DKIM_SIGNED_HEADERS,
        engine: str = "openssl",
    ) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        if engine not in ("openssl", "dkimpy"):
            raise ValueError(f"unknown DKIM engine {engine!r}")
        self.selector = selector
        self.domain = domain
        self.private_key_pem = private_key_pem
        self.headers = tuple(h.lower() for h in headers)
        self.engine = engine
        self._key = load_pem_private_key(private_key_pem, password=None)

    @classmethod
    def from_config(cls, config: Any) -> DkimSigner | None:
        """A signer when `DKIM_PRIVATE_KEY_PATH`, `DKIM_SELECTOR` and `DKIM_DOMAIN` are all set."""
        path = config.get("DKIM_PRIVATE_KEY_PATH") or ""
        selector = config.get("DKIM_SELECTOR") or ""
        domain = config.get("DKIM_DOMAIN") or ""
        if not (path and selector and domain):
            return None
        return cls(selector, domain, Path(path).read_bytes())

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF line ends) with a DKIM-Signature header in front."""
        if self.engine == "dkimpy":
            import dkim

            signature = dkim.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self.private_key_pem,
                include_headers=[h.encode("ascii") for h in self.headers],
                linesep=b"\r\n",
            )
            return signature + message
        return self._sign_openssl(message)

    def _sign_openssl(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        head, _, body = message.partition(b"\r\n\r\n")
        # Simple body canonicalisation: the body up to its last non-empty line, then CRLF.
        body = body.rstrip(b"\r\n") + b"\r\n" if body.strip(b"\r\n") else b"\r\n"
        body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        fields: dict[str, bytes] = {}
        for field in _FIELD_START.split(head + b"\r\n"):
            if field:
                name, _, value = field.partition(b":")
                # Our messages hold each signed header once; the last one wins as in RFC 6376.
                fields[name.strip().lower().decode("ascii")] = value
        signed = [h for h in self.headers if h in fields]
        tags = (
            f"v=1; a=rsa-sha256; c=relaxed/simple; d={self.domain}; s={self.selector};"
            f"\r\n t={int(time.time())}; h={':'.join(signed)};\r\n bh={body_hash};\r\n b="
        )
        to_hash = b"".join(_relaxed(h, fields[h]) + b"\r\n" for h in signed)
        to_hash += _relaxed("dkim-signature", tags.encode("ascii"))
        signature = self._key.sign(to_hash, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
        b64 = base64.b64encode(signature).decode("ascii")
        folded = "\r\n ".join(b64[i : i + 72] for i in range(0, len(b64), 72))
        return f"DKIM-Signature: {tags}{folded}\r\n".encode("ascii") + message


# A header field starts at a line that does not begin with white space.
_FIELD_START = re.compile(rb"\r\n(?![ \t])")
_WSP = re.compile(rb"[ \t]+")


def _relaxed(name: str, value: bytes) -> bytes:
    """Relaxed header canonicalisation (RFC 6376 3.4.2) of one field."""
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.encode("ascii") + b":" + value
