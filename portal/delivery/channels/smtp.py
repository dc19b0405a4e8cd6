"""Email over SMTP from `SMTP_URL`, one reused connection per batch.

    smtp://host:port             plain (a local relay)
    smtp+starttls://host:port    upgraded with STARTTLS (port 587)
    smtps://host:port            implicit TLS (port 465)
    optional user:password@      URL-encoded; sent with AUTH after TLS is up

    with SmtpSession(parse_smtp_url(url)) as smtp:      # raises ChannelUnavailable
        for delivery in batch:
            result = smtp.send(envelope_from, delivery.email, message_bytes)
            if result.affects_batch:
                break                                    # the rest of the batch: retry later

Each `send` is its own mail transaction (MAIL, RCPT, DATA), so every recipient gets its
own reply and its own `SendResult`. A connection the server dropped (idle timeout, 421)
is reopened once and the message sent again.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import unquote, urlsplit

from portal.delivery.channels.base import ACCEPTED, ChannelUnavailable, Outcome, SendResult

DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
DEFAULT_TIMEOUT = 30.0

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
# Wording of refusals that are about the sending host or its reputation, not the mailbox.
_BLOCK_WORDS = re.compile(
    r"block ?list|black ?list|blocked|spamhaus|\brbl\b|\bdnsbl\b|reputation|listed at|"
    r"policy|spam|not authori[sz]ed",
    re.IGNORECASE,
)
# Wording of refusals that are about the mailbox when the server gave no enhanced code.
_MAILBOX_WORDS = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|mailbox (not found|"
    r"unavailable|does not exist)|does not exist|invalid (recipient|mailbox|address)|"
    r"recipient (rejected|not found|unknown)|address rejected",
    re.IGNORECASE,
)


# An addr-spec safe on an SMTP command line: no spaces, angle brackets or control characters.
_ENVELOPE_ADDRESS = re.compile(r"^[^\s<>\x00-\x1f\x7f@]+@[^\s<>\x00-\x1f\x7f@]+$")
_LEADING_DOT = re.compile(rb"(?m)^\.")


class SmtpUrlError(ValueError):
    pass


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # "plain" | "starttls" | "tls"
    username: str = ""
    password: str = ""
    timeout: float = DEFAULT_TIMEOUT


def parse_smtp_url(url: str, timeout: float = DEFAULT_TIMEOUT) -> SmtpSettings:
    """`SmtpSettings` from an `SMTP_URL`; the user name and password are URL-decoded."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise SmtpUrlError(f"unsupported SMTP_URL scheme {scheme!r}: use smtp, smtp+starttls or smtps")
    if not parts.hostname:
        raise SmtpUrlError("SMTP_URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as error:
        raise SmtpUrlError(f"SMTP_URL has a bad port: {error}") from None
    security = {"smtp": "plain", "smtp+starttls": "starttls", "smtps": "tls"}[scheme]
    return SmtpSettings(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        timeout=timeout,
    )


def classify_reply(code: int, text: str, *, stage: str = "rcpt") -> SendResult:
    """The outcome of one SMTP refusal. `stage` is the command refused: "mail", "rcpt" or
    "data". 4xx is temporary; 5.1.x (or mailbox wording without an enhanced code) is a hard
    bounce; a refusal of the sender (MAIL FROM), 5.7.x or block-list wording pauses the
    campaign; any other 5xx fails this message only."""
    match = _ENHANCED.match(text)
    detail = ".".join(match.groups()) if match else ""
    result = {"code": code, "detail": detail, "message": text[:500]}
    if 200 <= code < 300:
        return SendResult(Outcome.ACCEPTED, **result)
    if 400 <= code < 500:
        return SendResult(Outcome.RETRY, **result)
    subject = match.group(2) if match else ""
    if stage == "mail" or subject == "7":
        return SendResult(Outcome.PAUSE, **result)
    if subject == "1":
        return SendResult(Outcome.HARD_BOUNCE, **result)
    if _BLOCK_WORDS.search(text):
        return SendResult(Outcome.PAUSE, **result)
    if not match and code in (550, 551, 553) and _MAILBOX_WORDS.search(text):
        return SendResult(Outcome.HARD_BOUNCE, **result)
    return SendResult(Outcome.FAILED, **result)


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN when offered (one round trip, and a refusal is final), else smtplib's
    choice, which tries the next mechanism after a refusal."""
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" in smtp.esmtp_features.get("auth", "").upper().split():
        smtp.user, smtp.password = username, password
        smtp.auth("PLAIN", smtp.auth_plain)
    else:
        smtp.login(username, password)


def _decode(message: bytes | str) -> str:
    if isinstance(message, bytes):
        return message.decode("utf-8", "replace")
    return message


def _connection_trouble(error: BaseException) -> SendResult:
    return SendResult(Outcome.RETRY, 0, "", f"{type(error).__name__}: {error}"[:500], True)


class SmtpSession:
    """One SMTP connection reused for a batch. Not thread-safe: one per worker."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        pipelining: bool = True,
    ) -> None:
        self.settings = settings
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.reconnects = 0
        # Use RFC 2920 pipelining when the server offers it (2 round trips, not 4).
        self.pipelining = pipelining

    @classmethod
    def from_url(cls, url: str, **kwargs) -> SmtpSession:
        return cls(parse_smtp_url(url), **kwargs)

    # -- connection -----------------------------------------------------------------------
    def open(self) -> None:
        """Connect, upgrade to TLS and log in as configured; raise `ChannelUnavailable` (with
        a RETRY result, or PAUSE for refused credentials) when that fails."""
        self.close()
        s = self.settings
        try:
            if s.security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s.host,
                    s.port,
                    local_hostname=self.local_hostname,
                    timeout=s.timeout,
                    context=self.ssl_context,
                )
            else:
                smtp = smtplib.SMTP(s.host, s.port, local_hostname=self.local_hostname, timeout=s.timeout)
            try:
                smtp.ehlo()
                if s.security == "starttls":
                    smtp.starttls(context=self.ssl_context)
                    smtp.ehlo()
                if s.username:
                    _login(smtp, s.username, s.password)
            except BaseException:
                smtp.close()
                raise
        except smtplib.SMTPAuthenticationError as error:
            raise ChannelUnavailable(
                SendResult(Outcome.PAUSE, error.smtp_code, "", _decode(error.smtp_error), True)
            ) from error
        except smtplib.SMTPResponseException as error:
            text = _decode(error.smtp_error)
            outcome = Outcome.RETRY if 400 <= error.smtp_code < 500 else Outcome.PAUSE
            raise ChannelUnavailable(SendResult(outcome, error.smtp_code, "", text[:500], True)) from error
        except (OSError, smtplib.SMTPException) as error:
            raise ChannelUnavailable(_connection_trouble(error)) from error
        self._smtp = smtp

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()

    def __enter__(self) -> SmtpSession:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- sending --------------------------------------------------------------------------
    def send(
        self,
        envelope_from: str,
        recipient: str,
        message: bytes,
        while_waiting: Callable[[], None] | None = None,
    ) -> SendResult:
        """Send `message` (complete RFC 5322 bytes, CRLF line ends) to one recipient.

        `while_waiting`, when given, is called once the message is on the wire and before the
        server's answer to it is read (with pipelining), so that the caller's work on its next
        message overlaps the server's on this one; it must not raise."""
        for address in (envelope_from, recipient):
            if not _ENVELOPE_ADDRESS.match(address):
                # Never let a contact's value reach the SMTP command line.
                return SendResult(Outcome.HARD_BOUNCE, 0, "invalid_address", address[:200])
        for attempt in (1, 2):
            if self._smtp is None:
                try:
                    self.open()
                except ChannelUnavailable as unavailable:
                    return unavailable.result
                if attempt == 2:
                    self.reconnects += 1
            smtp = self._smtp
            try:
                if self.pipelining and smtp.has_extn("pipelining"):  # type: ignore[union-attr]
                    return self._send_pipelined(smtp, envelope_from, recipient, message, while_waiting)  # type: ignore[arg-type]
                smtp.sendmail(envelope_from, [recipient], message)  # type: ignore[union-attr]
                return ACCEPTED
            except smtplib.SMTPServerDisconnected as error:
                # Dropped by the server (idle timeout, 421 on a command): reopen once.
                self._discard()
                if attempt == 2:
                    return _connection_trouble(error)
            except smtplib.SMTPRecipientsRefused as error:
                code, text = error.recipients[recipient]
                return classify_reply(code, _decode(text), stage="rcpt")
            except smtplib.SMTPSenderRefused as error:
                if error.smtp_code == 421:
                    self._discard()
                return classify_reply(error.smtp_code, _decode(error.smtp_error), stage="mail")
            except smtplib.SMTPDataError as error:
                if error.smtp_code == 421:
                    self._discard()
                return classify_reply(error.smtp_code, _decode(error.smtp_error), stage="data")
            except (OSError, smtplib.SMTPException) as error:
                # Timeout or broken socket: the state of the conversation is unknown.
                self._discard()
                return _connection_trouble(error)
        raise AssertionError("unreachable")

    def _send_pipelined(
        self,
        smtp: smtplib.SMTP,
        envelope_from: str,
        recipient: str,
        message: bytes,
        while_waiting: Callable[[], None] | None = None,
    ) -> SendResult:
        """One transaction in two round trips (RFC 2920): MAIL, RCPT and DATA in one write,
        then the body. Each reply is still read and classified on its own."""
        smtp.send(f"MAIL FROM:<{envelope_from}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, mail_text), (rcpt_code, rcpt_text), (data_code, _) = replies
        if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
            # A server that accepts DATA without a recipient gets an empty message body.
            smtp.send(b".\r\n")
            smtp.getreply()
        if mail_code == 421 or rcpt_code == 421 or data_code == 421:
            self._discard()
        elif mail_code != 250 or rcpt_code not in (250, 251) or data_code != 354:
            self._reset(smtp)
        if mail_code != 250:
            return classify_reply(mail_code, _decode(mail_text), stage="mail")
        if rcpt_code not in (250, 251):
            return classify_reply(rcpt_code, _decode(rcpt_text), stage="rcpt")
        if data_code != 354:
            return classify_reply(data_code, _decode(replies[2][1]), stage="data")
        # Dot-stuffing (RFC 5321 4.5.2); the scan is skipped when no line starts with a dot.
        body = _LEADING_DOT.sub(b"..", message) if message.startswith(b".") or b"\n." in message else message
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        smtp.send(body + b".\r\n")
        if while_waiting is not None:
            while_waiting()
        code, text = smtp.getreply()
        if code == 421:
            self._discard()
        return ACCEPTED if code == 250 else classify_reply(code, _decode(text), stage="data")

    def _reset(self, smtp: smtplib.SMTP) -> None:
        # A connection that cannot even reset is dropped; the refusal stands as classified.
        try:
            smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._discard()

    def _discard(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()
