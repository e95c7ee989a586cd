"""Webhook requests over HTTP with httpx: the WebhookSender port."""

from __future__ import annotations

from types import TracebackType

import httpx

from domain.errors import Unavailable
from domain.ports import WebhookReply, WebhookRequest

DEFAULT_TIMEOUT_SECONDS = 10.0


class HttpxWebhookSender:
    """POSTs with one pooled client; redirects are not followed (a 3xx is the answer), and
    anything that keeps an answer from arriving is ``Unavailable`` (tried again later)."""

    def __init__(
        self,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, transport=transport,
            # Receivers are configured per policy; no proxy from the environment is implied.
            trust_env=False,
        )

    async def post(self, request: WebhookRequest) -> WebhookReply:
        try:
            reply = await self._http.post(
                request.url, content=request.body, headers=dict(request.headers))
        except httpx.LocalProtocolError as exc:
            # Its message quotes the offending header, which may be the webhook's secret.
            raise Unavailable(f"the request could not be sent ({type(exc).__name__})") from exc
        except httpx.TimeoutException as exc:
            raise Unavailable(f"no answer within the timeout of {self._timeout:g} s "
                              f"({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"could not reach the receiver ({type(exc).__name__}: {exc})"
                              ) from exc
        return WebhookReply(reply.status_code, reply.headers.get("retry-after", ""))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HttpxWebhookSender:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()
