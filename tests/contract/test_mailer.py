"""The Mailer contract over the in-memory, file outbox and SMTP mailers, and SMTP's failures."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.mail.outbox import FileOutboxMailer, list_outbox
from adapters.mail.smtp import SmtpMailer, SmtpSettings, StartTls, smtp_mailer
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.errors import Unavailable
from domain.ports import Email, Mailer

USER, PASSWORD = "opsicle", "correct horse"


@attrs.frozen
class MailerHarness:
    """A mailer under test and how to read back what reached the other side."""

    mailer: Mailer
    received: Callable[[], list[Email]]


# ---------------------------------------------------------------- an SMTP server on loopback


class _Inbox:
    """aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def emails(self) -> list[Email]:
        found = []
        for m in self.messages:
            body = m.get_body(preferencelist=("plain",))
            # SMTP carries CRLF line ends; compare with the text as it was sent.
            text = body.get_content().replace("\r\n", "\n").removesuffix("\n") \
                if isinstance(body, EmailMessage) else ""
            found.append(Email(to=str(m["To"]), subject=str(m["Subject"]), text=text))
        return found


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(
        USER.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd itself answers (235, or 535 on a wrong password).
    return AuthResult(success=ok, handled=False)


@attrs.frozen
class Tls:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, made for this session."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsicle test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("smtp-tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return Tls(directory / "cert.pem", directory / "key.pem")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@attrs.frozen
class SmtpServer:
    inbox: _Inbox
    port: int


def _serve(**kwargs: Any) -> Iterator[SmtpServer]:
    # aiosmtpd logs every connection at INFO, from its own thread, whatever test runs then.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(inbox, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server(tls: Tls) -> Iterator[SmtpServer]:
    """STARTTLS and AUTH required, as a real submission server would."""
    yield from _serve(tls_context=tls.server_context(), require_starttls=True,
                      authenticator=_authenticate, auth_require_tls=True)


def _settings(port: int, **kw: Any) -> SmtpSettings:
    fields: dict[str, Any] = {"host": "127.0.0.1", "port": port, "username": USER,
                              "password": PASSWORD, "from_address": "opsicle@example.test",
                              "timeout": 5.0}
    fields.update(kw)
    return SmtpSettings(**fields)


# ---------------------------------------------------------------- the legs


@pytest.fixture(params=["memory", "outbox", "smtp"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MailerHarness]:
    if request.param == "memory":
        memory = InMemoryMailer()
        yield MailerHarness(memory, lambda: list(memory.sent))
    elif request.param == "outbox":
        outbox = tmp_path / "outbox"
        yield MailerHarness(FileOutboxMailer(outbox, FakeClock()),
                            lambda: [o.email for o in list_outbox(outbox)])
    else:
        server: SmtpServer = request.getfixturevalue("smtp_server")
        tls: Tls = request.getfixturevalue("tls")
        mailer = smtp_mailer(_settings(server.port), ssl_context=tls.client_context())
        yield MailerHarness(mailer, server.inbox.emails)


async def test_a_sent_email_arrives_with_its_subject_recipient_and_text(
        harness: MailerHarness) -> None:
    email = Email(to="ada@example.test", subject="Approve run r-42",
                  text="Open https://opsicle.example.test/runs/r-42 to decide.")
    await harness.mailer.send(email)
    assert harness.received() == [email]


async def test_non_ascii_subject_and_text_survive(harness: MailerHarness) -> None:
    email = Email(to="zoë@example.test", subject="Déjà vu — run ✓",
                  text="Grüße,\nthe run finished.\n\nLine three: 日本語")
    await harness.mailer.send(email)
    assert harness.received() == [email]


async def test_emails_arrive_in_the_order_sent(harness: MailerHarness) -> None:
    emails = [Email(to=f"u{i}@example.test", subject=f"n{i}", text=f"body {i}")
              for i in range(3)]
    for email in emails:
        await harness.mailer.send(email)
    assert harness.received() == emails


# ---------------------------------------------------------------- SMTP failures


async def test_smtp_from_header_names_the_sender(smtp_server: SmtpServer, tls: Tls) -> None:
    mailer = SmtpMailer(_settings(smtp_server.port, from_name="Opsicle Alerts"),
                        ssl_context=tls.client_context())
    await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    (message,) = smtp_server.inbox.messages
    assert message["From"] == "Opsicle Alerts <opsicle@example.test>"


async def test_smtp_wrong_password_is_unavailable_with_a_clear_message(
        smtp_server: SmtpServer, tls: Tls) -> None:
    mailer = SmtpMailer(_settings(smtp_server.port, password="wrong-secret"),
                        ssl_context=tls.client_context())
    with pytest.raises(Unavailable) as caught:
        await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    text = str(caught.value)
    assert f"SMTP server 127.0.0.1:{smtp_server.port} rejected the login of 'opsicle'" in text
    assert "535" in text
    assert "wrong-secret" not in text
    assert smtp_server.inbox.messages == []


async def test_smtp_unreachable_server_is_unavailable_naming_it() -> None:
    port = _free_port()  # bound and closed again: nothing listens there
    mailer = SmtpMailer(_settings(port))
    with pytest.raises(Unavailable) as caught:
        await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    assert f"SMTP server 127.0.0.1:{port} could not be reached" in str(caught.value)


async def test_smtp_untrusted_certificate_is_unavailable(smtp_server: SmtpServer) -> None:
    mailer = SmtpMailer(_settings(smtp_server.port))  # the system's CAs, not the test's
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    assert smtp_server.inbox.messages == []


@pytest.fixture
def plain_server() -> Iterator[SmtpServer]:
    """No TLS and no AUTH: what STARTTLS=required must refuse to use."""
    yield from _serve()


async def test_smtp_required_starttls_refuses_a_server_without_it(
        plain_server: SmtpServer) -> None:
    mailer = SmtpMailer(_settings(plain_server.port, username=None, password=None))
    with pytest.raises(Unavailable, match="does not offer STARTTLS"):
        await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    assert plain_server.inbox.messages == []


@pytest.mark.parametrize("mode", [StartTls.OPTIONAL, StartTls.OFF])
async def test_smtp_without_required_starttls_sends_in_clear_to_a_plain_server(
        plain_server: SmtpServer, mode: StartTls) -> None:
    mailer = SmtpMailer(_settings(plain_server.port, starttls=mode, username=None,
                                  password=None))
    await mailer.send(Email(to="a@example.test", subject="s", text="t"))
    assert [m["Subject"] for m in plain_server.inbox.messages] == ["s"]
