"""A mailer that keeps what it sends, for tests."""

from __future__ import annotations

from domain.errors import Unavailable
from domain.ports import Email


class InMemoryMailer:
    """Keeps every sent ``Email`` in ``sent``; set ``unavailable`` to make sending fail."""

    def __init__(self) -> None:
        self.sent: list[Email] = []
        self.unavailable = False

    async def send(self, email: Email) -> None:
        if self.unavailable:
            raise Unavailable("mail server is not answering (in-memory mailer set unavailable)")
        self.sent.append(email)

    def to(self, address: str) -> list[Email]:
        """What was sent to ``address`` (case-insensitive), oldest first."""
        return [e for e in self.sent if e.to.lower() == address.lower()]
