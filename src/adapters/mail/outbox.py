"""A mailer that writes each email as an .eml file, for machines with no mail server."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from pathlib import Path

import attrs

from adapters.system import UlidIdGenerator
from domain.errors import Unavailable
from domain.ports import Clock, Email

DEFAULT_SENDER = "Opsicle <opsicle@localhost>"
# Passed to make_msgid so it does not ask the resolver for this host's name.
_MESSAGE_ID_DOMAIN = "opsicle.localhost"


@attrs.frozen
class OutboxEmail:
    path: Path
    sent_at: datetime | None
    sender: str
    email: Email


class FileOutboxMailer:
    """Writes ``<ULID>.eml`` files, so names sort by time, into a directory only its owner reads.

    Emails carry sign-up and reset links, hence mode 0700 for the directory and 0600 for
    each file. A file appears whole or not at all (written aside, then renamed).
    """

    def __init__(self, directory: str | os.PathLike[str], clock: Clock, *,
                 sender: str = DEFAULT_SENDER) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._sender = sender
        self._ids = UlidIdGenerator(clock)

    async def send(self, email: Email) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = email.to
        message["Subject"] = email.subject
        message["Date"] = format_datetime(self._clock.now())
        message["Message-ID"] = make_msgid(domain=_MESSAGE_ID_DOMAIN)
        message.set_content(email.text)
        name = f"{self._ids.new_id()}.eml"
        try:
            await asyncio.to_thread(self._write, name, bytes(message))
        except OSError as exc:
            raise Unavailable(f"could not write email to outbox {self.directory}: {exc}") from exc

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for an existing directory.
        os.chmod(self.directory, 0o700)
        partial = self.directory / f".{name}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, self.directory / name)


def list_outbox(directory: str | os.PathLike[str]) -> list[OutboxEmail]:
    """Every email in the outbox, newest last; an outbox not yet created is empty."""
    root = Path(directory)
    if not root.is_dir():
        return []
    parser = BytesParser(policy=policy.default)
    found = []
    for path in sorted(root.glob("*.eml")):
        message = parser.parsebytes(path.read_bytes())
        date = message["Date"]
        body = message.get_body(preferencelist=("plain",))
        # set_content ends the body with a newline; drop it so the text reads back as sent.
        text = body.get_content().removesuffix("\n") if isinstance(body, EmailMessage) else ""
        found.append(OutboxEmail(
            path=path,
            sent_at=parsedate_to_datetime(date) if date else None,
            sender=str(message["From"] or ""),
            email=Email(to=str(message["To"] or ""), subject=str(message["Subject"] or ""),
                        text=text),
        ))
    return found
