"""Message building: per-recipient parts, header-injection guards, UTF-8, DKIM."""

from __future__ import annotations

import base64
import re
from email import message_from_bytes, policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from portal.delivery.mime import (
    DkimSigner,
    HeaderValueError,
    MessageSkeleton,
    make_message_id,
    unsubscribe_mailto,
)

UNSUB = "https://mkt.example.com/u/TOKEN"


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    """(private key PEM, the DNS TXT record publishing its public key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def build(skeleton: MessageSkeleton | None = None, **overrides) -> bytes:
    values = {
        "to_email": "li.lei@example.org",
        "to_name": "李雷",
        "subject": "欢迎参加 2026 年度产品发布会",
        "html": "<p>您好，李雷</p>",
        "text": "您好，李雷",
        "message_id": make_message_id(42, "mkt.example.com"),
        "unsubscribe_url": UNSUB,
        "unsubscribe_mailto": "mailto:unsubscribe@example.com?subject=unsubscribe",
    }
    values.update(overrides)
    return (skeleton or MessageSkeleton("市场部 <marketing@example.com>")).build(**values)


def parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return [line.split(":", 1)[0] for line in head.split("\r\n") if line and line[0] not in " \t"]


def test_chinese_display_names_and_subject_are_encoded_and_read_back():
    message = parse(build())
    assert message["Subject"] == "欢迎参加 2026 年度产品发布会"
    assert message["To"].addresses[0].display_name == "李雷"
    assert message["To"].addresses[0].addr_spec == "li.lei@example.org"
    assert message["From"].addresses[0].display_name == "市场部"


def test_message_is_7bit_ascii_with_crlf_lines_no_longer_than_998():
    data = build(subject="很长的主题" * 60)
    data.decode("ascii")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_parts_carry_the_rendered_html_and_text():
    message = parse(build(html="<p>你好 <b>世界</b></p>\n", text="你好 世界\n"))
    assert message.get_body(("html",)).get_content() == "<p>你好 <b>世界</b></p>\r\n"
    assert message.get_body(("plain",)).get_content() == "你好 世界\r\n"


def test_list_unsubscribe_headers_follow_rfc_8058():
    message = parse(build())
    assert message["List-Unsubscribe"] == (f"<{UNSUB}>, <mailto:unsubscribe@example.com?subject=unsubscribe>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_mailto_unsubscribe_carries_the_token_in_its_subject():
    mailto = unsubscribe_mailto("unsubscribe@example.com", "WzEsMl0.abc-_")
    assert mailto == "mailto:unsubscribe@example.com?subject=unsubscribe%20WzEsMl0.abc-_"
    message = parse(build(unsubscribe_mailto=mailto))
    assert message["List-Unsubscribe"] == f"<{UNSUB}>, <{mailto}>"


def test_message_id_is_the_one_given():
    message_id = make_message_id(42, "mkt.example.com")
    assert parse(build(message_id=message_id))["Message-ID"] == message_id


@pytest.mark.parametrize(
    "name",
    [
        "Eve\r\nBcc: victim@example.net",
        "Eve\nBcc: victim@example.net",
        "Eve\rBcc: victim@example.net",
        "Eve\x00Bcc: victim@example.net",
        "Eve\u2028Bcc: victim@example.net",
        "=?utf-8?q?Eve=0D=0ABcc:_victim@example.net?=",
        '"Eve" <attacker@evil.example>, "x',
        "张\r\n三\r\n\r\n<html>body</html>",
    ],
)
def test_a_malicious_name_cannot_add_headers_or_recipients(name):
    data = build(to_name=name)
    message = parse(data)
    assert header_names(data).count("To") == 1
    assert "Bcc" not in header_names(data)
    [address] = message["To"].addresses
    assert address.addr_spec == "li.lei@example.org"
    assert "\n" not in address.display_name and "\r" not in address.display_name


@pytest.mark.parametrize(
    "subject",
    [
        "Hello\r\nBcc: victim@example.net",
        "Hello\nContent-Type: text/html",
        "Hello\x00\x0bworld",
        "=?utf-8?q?Hello=0ABcc:_victim@example.net?=",
        "=?utf-8?b?SGVsbG8KQmNjOiB2aWN0aW1AZXhhbXBsZS5uZXQ=?=",
        "优惠\r\nBcc: victim@example.net",
    ],
)
def test_a_malicious_subject_cannot_add_headers(subject):
    data = build(subject=subject)
    names = header_names(data)
    assert "Bcc" not in names and names.count("Content-Type") == 1
    decoded = parse(data)["Subject"]
    assert "\n" not in decoded and "\r" not in decoded and "\x00" not in decoded


def test_an_encoded_word_in_a_subject_is_shown_literally_not_decoded():
    subject = "=?utf-8?q?Hello=0ABcc:_victim@example.net?="
    assert parse(build(subject=subject))["Subject"] == subject


@pytest.mark.parametrize(
    "address",
    [
        "victim@example.net\r\nBcc: other@example.net",
        "a@b.example>, <c@d.example",
        "no-at-sign",
        "spa ce@example.com",
        "a@example.com\x00",
    ],
)
def test_a_malformed_recipient_address_is_refused(address):
    with pytest.raises(HeaderValueError):
        build(to_email=address)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_id", "<x@y>\r\nBcc: v@example.net"),
        ("message_id", "no-brackets@example.com"),
        ("unsubscribe_url", "https://mkt.example.com/u/x>\r\nBcc: v@example.net"),
        ("unsubscribe_url", "javascript:alert(1)"),
        ("unsubscribe_mailto", "mailto:a@b.example> <https://evil.example/"),
    ],
)
def test_a_malformed_message_id_or_unsubscribe_url_is_refused(field, value):
    with pytest.raises(HeaderValueError):
        build(**{field: value})


def test_fixed_headers_are_checked_when_the_skeleton_is_built():
    with pytest.raises(HeaderValueError):
        MessageSkeleton("a@example.com", extra_headers={"X-Campaign": "1\r\nBcc: v@example.net"})


def test_html_only_message_is_a_single_part():
    message = parse(build(text=None))
    assert message.get_content_type() == "text/html"
    assert message.get_content() == "<p>您好，李雷</p>"


@pytest.mark.parametrize("engine", ["openssl", "dkimpy"])
def test_dkim_signature_verifies_with_dkimpy(dkim_key, engine):
    pem, txt = dkim_key
    skeleton = MessageSkeleton(
        "市场部 <marketing@example.com>", dkim=DkimSigner("s1", "example.com", pem, engine=engine)
    )
    data = build(skeleton)
    assert data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: txt)


def test_dkim_signs_from_subject_and_the_unsubscribe_headers(dkim_key):
    pem, _ = dkim_key
    data = build(MessageSkeleton("m@example.com", dkim=DkimSigner("s1", "example.com", pem)))
    signature = parse(data)["DKIM-Signature"]
    signed = re.search(r"h=([^;]+);", signature.replace(" ", "")).group(1).split(":")
    for name in (
        "from",
        "subject",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "to",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ):
        assert name in signed


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"Subject: =?utf-8?", b"Subject: =?UTF-8?"),
    ],
)
def test_dkim_signature_breaks_when_a_signed_header_changes(dkim_key, old, new):
    pem, txt = dkim_key
    data = build(MessageSkeleton("m@example.com", dkim=DkimSigner("s1", "example.com", pem)))
    assert old in data
    assert not dkim.verify(data.replace(old, new), dnsfunc=lambda name, timeout=5: txt)


def test_dkim_signer_comes_from_config_only_when_fully_configured(dkim_key, tmp_path):
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_key[0])
    config = {"DKIM_PRIVATE_KEY_PATH": str(key_file), "DKIM_SELECTOR": "s1", "DKIM_DOMAIN": ""}
    assert DkimSigner.from_config(config) is None
    config["DKIM_DOMAIN"] = "example.com"
    signer = DkimSigner.from_config(config)
    assert (signer.selector, signer.domain) == ("s1", "example.com")


def test_long_chinese_subjects_and_names_fold_into_encoded_words_that_decode_back():
    import email
    from email import policy

    from portal.delivery.mime import MessageSkeleton

    subject = "尊敬的王小明先生，诚邀您参加2026秋季智能制造新品发布会暨客户答谢晚宴（上海站）" * 2
    name = "上海云启科技市场部王小明"
    data = MessageSkeleton("市场部 <marketing@example.com>").build(
        to_email="c1@example.org", to_name=name, subject=subject, text="你好", message_id="<d1.a@example.com>"
    )
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    subject_at = next(i for i, line in enumerate(lines) if line.startswith(b"Subject:"))
    assert all(len(line) <= 78 for line in lines[subject_at:] if line.startswith((b"Subject:", b" ")))
    assert all(len(line) <= 998 for line in lines)
    message = email.message_from_bytes(data, policy=policy.default)
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == name
