"""Fixtures of the delivery tests: contacts and the app's tracking tokens."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def make_contact(app) -> Callable[..., int]:
    """Create a contact; returns its id."""

    def make(email: str = "li.lei@example.com", name: str = "李雷", **fields) -> int:
        from portal.audience.models import Contact
        from portal.extensions import db

        with app.app_context():
            contact = Contact(email=email, name=name, **fields)
            db.session.add(contact)
            db.session.commit()
            return contact.id

    return make


@pytest.fixture
def tokens(app):
    from portal.delivery.tokens import tracking_tokens

    return tracking_tokens(app)


class ScriptedHandler:
    """An aiosmtpd handler whose RCPT replies depend on the recipient's local part:
    busy -> 450, nouser -> 550 5.1.1, blocked -> 554 5.7.1 (block list), blocklist -> 554
    without enhanced code, full -> 552 5.2.2, drop -> the connection is closed once;
    a MAIL FROM of rejected@... gets 553 5.7.1; a message to spam@... is refused after its
    content (554 5.7.1 at the end of DATA). Everything else is accepted."""

    REPLIES = {
        "busy": "450 4.2.1 Mailbox busy, try again later",
        "nouser": "550 5.1.1 Recipient address rejected: User unknown in virtual mailbox table",
        "blocked": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
        "blocklist": "554 Your IP address is on our block list",
        "full": "552 5.2.2 Mailbox full",
    }

    def __init__(self, pipelining: bool = False) -> None:
        self.messages: list[dict] = []
        self.connections = 0
        self.dropped = False
        self.pipelining = pipelining

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            # aiosmtpd reads commands from a stream, so pipelined commands simply queue up.
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.startswith("rejected@"):
            return "553 5.7.1 Sender address rejected: not permitted"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local == "drop" and not self.dropped:
            self.dropped = True
            server.transport.close()
            return "421 4.4.2 closing"
        if local in self.REPLIES:
            return self.REPLIES[local]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if any(address.split("@")[0] == "spam" for address in envelope.rcpt_tos):
            return "554 5.7.1 Message content rejected as spam"
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": envelope.content})
        return "250 2.0.0 Ok: queued"


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def scripted_smtp(request):
    """A real SMTP server on a free port with scripted replies (see `ScriptedHandler`), once
    without and once with PIPELINING (RFC 2920) offered."""
    from aiosmtpd.controller import Controller

    from tests.conftest import free_port

    handler = ScriptedHandler(pipelining=request.param)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (certificate path, key path)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
