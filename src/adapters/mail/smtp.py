"""A mailer that hands each email to an SMTP server, with STARTTLS and AUTH."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from enum import StrEnum

import attrs

from domain.errors import Unavailable
from domain.ports import Clock, Email, Mailer

# Passed to make_msgid and EHLO so neither asks the resolver for this host's name.
_LOCAL_NAME = "opsicle.localhost"


class StartTls(StrEnum):
    REQUIRED = "required"  # refuse to send in clear text
    OPTIONAL = "optional"  # upgrade when the server offers it
    OFF = "off"


@attrs.frozen
class SmtpSettings:
    host: str
    port: int = 587
    starttls: StartTls = StartTls.REQUIRED
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    from_address: str = "opsicle@localhost"
    from_name: str = "Opsicle"
    timeout: float = 30.0


class SmtpMailer:
    """One connection per email, made in a worker thread (smtplib blocks).

    Emails are rare (sign-up, resets, approvals), so a connection per message costs little and
    leaves nothing open to go stale between them.
    """

    def __init__(self, settings: SmtpSettings, *, clock: Clock | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._settings = settings
        self._clock = clock
        self._ssl_context = ssl_context or ssl.create_default_context()
        self.server = f"SMTP server {settings.host}:{settings.port}"

    async def send(self, email: Email) -> None:
        s = self._settings
        message = EmailMessage()
        message["From"] = formataddr((s.from_name, s.from_address))
        message["To"] = email.to
        message["Subject"] = email.subject
        now = self._clock.now() if self._clock is not None else datetime.now(UTC)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = make_msgid(domain=_LOCAL_NAME)
        message.set_content(email.text)
        await asyncio.to_thread(self._deliver, message)

    def _deliver(self, message: EmailMessage) -> None:
        s = self._settings
        try:
            with smtplib.SMTP(s.host, s.port, local_hostname=_LOCAL_NAME,
                              timeout=s.timeout) as smtp:
                smtp.ehlo()
                if s.starttls is not StartTls.OFF:
                    if smtp.has_extn("starttls"):
                        smtp.starttls(context=self._ssl_context)
                        smtp.ehlo()
                    elif s.starttls is StartTls.REQUIRED:
                        raise Unavailable(f"{self.server} does not offer STARTTLS, which is "
                                          "required; not sending in clear text")
                if s.username is not None:
                    smtp.login(s.username, s.password or "")
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise Unavailable(f"{self.server} rejected the login of {s.username!r}: "
                              f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise Unavailable(f"{self.server} refused the recipient(s) "
                              f"{', '.join(exc.recipients)}") from exc
        except smtplib.SMTPResponseException as exc:
            raise Unavailable(f"{self.server} refused the message: "
                              f"{_reply(exc.smtp_code, exc.smtp_error)}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            # OSError covers refused connections, timeouts and TLS failures (ssl.SSLError).
            raise Unavailable(f"{self.server} could not be reached or used: {exc}") from exc


def _reply(code: int, text: bytes | str) -> str:
    body = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {body}"


def smtp_mailer(settings: SmtpSettings, *, clock: Clock | None = None,
                ssl_context: ssl.SSLContext | None = None) -> Mailer:
    """An SMTP mailer typed as the port, so mypy checks the adapter against it."""
    return SmtpMailer(settings, clock=clock, ssl_context=ssl_context)
