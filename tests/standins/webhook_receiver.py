"""A webhook receiver on loopback: records each request and answers with scripted statuses."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.standins.serve import serve_on_loopback


@attrs.frozen
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """Answers each POST with the next scripted status (then ``default``); ``received`` keeps
    every request with its headers (lower-cased names) and raw body. A 429 or 503 carries
    ``retry_after`` as its Retry-After header when that is set."""

    def __init__(self, script: Iterable[int] = (), default: int = 200,
                 retry_after: str = "") -> None:
        self.received: list[Received] = []
        self.script: deque[int] = deque(script)
        self.default = default
        self.retry_after = retry_after
        self.url = ""

    async def _hook(self, request: Request) -> Response:
        self.received.append(Received(request.url.path, dict(request.headers),
                                      await request.body()))
        status = self.script.popleft() if self.script else self.default
        headers = {"Location": f"{self.url}/elsewhere"} if 300 <= status < 400 else {}
        if status in (429, 503) and self.retry_after:
            headers["Retry-After"] = self.retry_after
        return Response(f"answered {status}", status_code=status, headers=headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])


@contextlib.asynccontextmanager
async def webhook_receiver(script: Iterable[int] = (), default: int = 200,
                           retry_after: str = "") -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(script, default, retry_after)
    async with serve_on_loopback(receiver.app()) as url:
        receiver.url = url
        yield receiver
