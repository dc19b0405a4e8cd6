"""The SMTP channel against real SMTP servers: URLs, TLS, auth, reuse, replies."""

from __future__ import annotations

import socket
import ssl
from datetime import timedelta

import pytest

from portal.delivery.channels import ChannelUnavailable, Outcome, retry_delay
from portal.delivery.channels.smtp import (
    SmtpSession,
    SmtpSettings,
    SmtpUrlError,
    classify_reply,
    parse_smtp_url,
)
from tests.conftest import free_port

MESSAGE = b"From: m@example.com\r\nTo: x@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def session_for(handler, **kwargs) -> SmtpSession:
    return SmtpSession.from_url(f"smtp://127.0.0.1:{handler.port}", **kwargs)


# -- SMTP_URL ----------------------------------------------------------------------------
def test_smtp_url_forms_are_parsed():
    assert parse_smtp_url("smtp://relay:2525") == SmtpSettings("relay", 2525, "plain")
    assert parse_smtp_url("smtp+starttls://mail.example.com").port == 587
    assert parse_smtp_url("smtp+starttls://mail.example.com").security == "starttls"
    assert parse_smtp_url("smtps://mail.example.com").port == 465
    assert parse_smtp_url("smtps://mail.example.com").security == "tls"


def test_smtp_url_credentials_are_url_decoded():
    settings = parse_smtp_url("smtps://user%40example.com:p%40ss%3Aw%2Ford@mail.example.com:465")
    assert (settings.username, settings.password) == ("user@example.com", "p@ss:w/ord")


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "smtp://host:notaport"])
def test_a_bad_smtp_url_is_refused(url):
    with pytest.raises(SmtpUrlError):
        parse_smtp_url(url)


# -- reply classification ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "text", "stage", "outcome"),
    [
        (250, "2.0.0 Ok", "rcpt", Outcome.ACCEPTED),
        (450, "4.2.1 Mailbox busy", "rcpt", Outcome.RETRY),
        (421, "4.7.0 Too many connections", "mail", Outcome.RETRY),
        (550, "5.1.1 User unknown", "rcpt", Outcome.HARD_BOUNCE),
        (553, "5.1.3 Bad recipient address syntax", "rcpt", Outcome.HARD_BOUNCE),
        (550, "User unknown", "rcpt", Outcome.HARD_BOUNCE),
        (554, "5.7.1 Client host blocked using zen.spamhaus.org", "rcpt", Outcome.PAUSE),
        (550, "5.7.1 Message rejected as spam by content filter", "data", Outcome.PAUSE),
        (554, "Your IP address is on our block list", "rcpt", Outcome.PAUSE),
        (553, "5.1.8 Sender domain does not exist", "mail", Outcome.PAUSE),
        (552, "5.2.2 Mailbox full", "rcpt", Outcome.FAILED),
        (552, "5.3.4 Message too big", "data", Outcome.FAILED),
    ],
)
def test_replies_are_classified(code, text, stage, outcome):
    assert classify_reply(code, text, stage=stage).outcome is outcome


def test_the_enhanced_status_code_is_kept():
    assert classify_reply(550, "5.1.1 User unknown").detail == "5.1.1"


def test_retry_delays_grow_then_give_up_as_a_soft_bounce():
    delays = [retry_delay(n) for n in range(1, 6)]
    assert delays == [
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=30),
        timedelta(hours=2),
        None,
    ]


# -- against a real server -----------------------------------------------------------------
def test_one_connection_is_reused_for_a_batch(scripted_smtp):
    with session_for(scripted_smtp) as smtp:
        results = [smtp.send("m@example.com", f"r{i}@example.org", MESSAGE) for i in range(5)]
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert scripted_smtp.connections == 1
    assert [m["to"] for m in scripted_smtp.messages] == [[f"r{i}@example.org"] for i in range(5)]


def test_mixed_replies_in_one_batch_each_get_their_treatment(scripted_smtp):
    recipients = [
        "a@x.org",
        "busy@x.org",
        "nouser@x.org",
        "blocked@x.org",
        "blocklist@x.org",
        "full@x.org",
        "b@x.org",
    ]
    with session_for(scripted_smtp) as smtp:
        outcomes = [smtp.send("m@example.com", r, MESSAGE).outcome for r in recipients]
    assert outcomes == [
        Outcome.ACCEPTED,
        Outcome.RETRY,
        Outcome.HARD_BOUNCE,
        Outcome.PAUSE,
        Outcome.PAUSE,
        Outcome.FAILED,
        Outcome.ACCEPTED,
    ]
    # A refused recipient does not spoil the connection for the next one.
    assert [m["to"] for m in scripted_smtp.messages] == [["a@x.org"], ["b@x.org"]]
    assert scripted_smtp.connections == 1


def test_pipelining_is_used_when_the_server_offers_it(scripted_smtp):
    with session_for(scripted_smtp) as smtp:
        assert smtp.send("m@example.com", "a@x.org", MESSAGE).ok
        assert smtp._smtp.has_extn("pipelining") is scripted_smtp.pipelining


def test_leading_dots_survive_the_transfer(scripted_smtp):
    message = b"Subject: dots\r\n\r\n.first\r\n..second\r\n.\r\nlast\r\n"
    with session_for(scripted_smtp) as smtp:
        assert smtp.send("m@example.com", "a@x.org", message).ok
    assert scripted_smtp.messages[0]["data"].replace(b"\r\n", b"\n") == message.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("recipient", ["a@x.org>\r\nRCPT TO:<b@x.org", "a@x.org\r\nDATA", "a b@x.org", "nobody"])
def test_a_recipient_that_could_inject_smtp_commands_is_never_sent(scripted_smtp, recipient):
    with session_for(scripted_smtp) as smtp:
        result = smtp.send("m@example.com", recipient, MESSAGE)
    assert (result.outcome, result.detail) == (Outcome.HARD_BOUNCE, "invalid_address")
    assert scripted_smtp.messages == []


def test_a_refused_sender_pauses_the_campaign(scripted_smtp):
    with session_for(scripted_smtp) as smtp:
        result = smtp.send("rejected@example.com", "a@x.org", MESSAGE)
    assert result.outcome is Outcome.PAUSE
    assert result.code == 553


def test_a_dropped_connection_is_reopened_once_and_the_message_sent(scripted_smtp):
    with session_for(scripted_smtp) as smtp:
        result = smtp.send("m@example.com", "drop@x.org", MESSAGE)
        assert smtp.reconnects == 1
    assert result.outcome is Outcome.ACCEPTED
    assert [m["to"] for m in scripted_smtp.messages] == [["drop@x.org"]]
    assert scripted_smtp.connections == 2


def test_connection_refused_is_temporary_for_the_whole_batch():
    with pytest.raises(ChannelUnavailable) as raised:
        SmtpSession.from_url(f"smtp://127.0.0.1:{free_port()}").open()
    assert raised.value.result.outcome is Outcome.RETRY
    assert raised.value.result.affects_batch


def test_send_without_a_reachable_server_returns_a_batch_wide_retry():
    result = SmtpSession.from_url(f"smtp://127.0.0.1:{free_port()}").send("m@e.com", "a@x.org", MESSAGE)
    assert (result.outcome, result.affects_batch) == (Outcome.RETRY, True)


def test_a_server_that_never_answers_times_out_as_temporary():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP handshake, never sends a greeting
        port = listener.getsockname()[1]
        session = SmtpSession(SmtpSettings("127.0.0.1", port, "plain", timeout=0.3))
        with pytest.raises(ChannelUnavailable) as raised:
            session.open()
    assert raised.value.result.outcome is Outcome.RETRY


# -- TLS and authentication ---------------------------------------------------------------
def _server_context(tls_files) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, tls_files))
    return context


def _client_context(tls_files) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


def _authenticator(server, session, envelope, mechanism, auth_data):
    from aiosmtpd.smtp import AuthResult

    ok = auth_data.login == b"mailer@example.com" and auth_data.password == b"p@ss:word"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def starttls_server(tls_files):
    from aiosmtpd.controller import Controller

    from tests.delivery.conftest import ScriptedHandler

    handler = ScriptedHandler()
    handler.port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=handler.port,
        tls_context=_server_context(tls_files),
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
    )
    controller.start()
    yield handler
    controller.stop()


def test_starttls_with_login_delivers(starttls_server, tls_files):
    url = f"smtp+starttls://mailer%40example.com:p%40ss%3Aword@127.0.0.1:{starttls_server.port}"
    with SmtpSession.from_url(url, ssl_context=_client_context(tls_files)) as smtp:
        assert smtp.send("m@example.com", "a@x.org", MESSAGE).ok
    assert len(starttls_server.messages) == 1


def test_refused_credentials_pause_instead_of_retrying_forever(starttls_server, tls_files):
    url = f"smtp+starttls://mailer%40example.com:wrong@127.0.0.1:{starttls_server.port}"
    with pytest.raises(ChannelUnavailable) as raised:
        SmtpSession.from_url(url, ssl_context=_client_context(tls_files)).open()
    assert raised.value.result.outcome is Outcome.PAUSE


def test_an_untrusted_certificate_is_refused(starttls_server):
    url = f"smtp+starttls://127.0.0.1:{starttls_server.port}"
    with pytest.raises(ChannelUnavailable):
        SmtpSession.from_url(url).open()


def test_implicit_tls_delivers(tls_files):
    from aiosmtpd.controller import Controller

    from tests.delivery.conftest import ScriptedHandler

    handler = ScriptedHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=_server_context(tls_files))
    controller.start()
    try:
        url = f"smtps://127.0.0.1:{port}"
        with SmtpSession.from_url(url, ssl_context=_client_context(tls_files)) as smtp:
            assert smtp.send("m@example.com", "a@x.org", MESSAGE).ok
    finally:
        controller.stop()
    assert len(handler.messages) == 1
