"""A webhook sender that records requests and answers with scripted statuses."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from domain.errors import Unavailable
from domain.ports import WebhookRequest

# A scripted answer: an HTTP status, or None for "no answer" (the port's Unavailable).
Answer = int | None


class InMemoryWebhookSender:
    """The WebhookSender port in memory: every request is kept in ``sent``; answers come from
    ``script`` in order, then ``default``."""

    def __init__(self, script: Iterable[Answer] = (), default: Answer = 200) -> None:
        self.sent: list[WebhookRequest] = []
        self._script: deque[Answer] = deque(script)
        self._default = default

    def answer(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def post(self, request: WebhookRequest) -> int:
        self.sent.append(request)
        status = self._script.popleft() if self._script else self._default
        if status is None:
            raise Unavailable("connection refused (scripted)")
        return status
