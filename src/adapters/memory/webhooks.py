"""A webhook sender that records requests and answers with scripted replies."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from domain.errors import Unavailable
from domain.ports import WebhookReply, WebhookRequest

# A scripted answer: an HTTP status, a whole reply (with a Retry-After header), or None for
# "no answer" (the port's Unavailable).
Answer = int | WebhookReply | None


class InMemoryWebhookSender:
    """The WebhookSender port in memory: every request is kept in ``sent``; answers come from
    ``script`` in order, then ``default``."""

    def __init__(self, script: Iterable[Answer] = (), default: Answer = 200) -> None:
        self.sent: list[WebhookRequest] = []
        self._script: deque[Answer] = deque(script)
        self._default = default

    def answer(self, *answers: Answer) -> None:
        self._script.extend(answers)

    async def post(self, request: WebhookRequest) -> WebhookReply:
        self.sent.append(request)
        answer = self._script.popleft() if self._script else self._default
        if answer is None:
            raise Unavailable("connection refused (scripted)")
        return answer if isinstance(answer, WebhookReply) else WebhookReply(answer)
