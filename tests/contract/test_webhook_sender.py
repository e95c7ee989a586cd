"""Contract of the webhook sender: the in-memory one, and httpx against a loopback receiver."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from adapters.http.webhooks import HttpxWebhookSender
from adapters.memory.webhooks import InMemoryWebhookSender
from domain.errors import Unavailable
from domain.ports import WebhookReply, WebhookRequest, WebhookSender
from tests.standins.serve import free_port
from tests.standins.webhook_receiver import webhook_receiver

# A sender whose receiver answers ``statuses`` in turn (a 429 or 503 with Retry-After:
# RETRY_AFTER), and a URL where nothing listens.
Rig = Callable[[list[int]], Awaitable[tuple[WebhookSender, str, str]]]
STATUSES = [200, 204, 302, 404, 429, 500, 503]
RETRY_AFTER = "Wed, 21 Oct 2026 07:28:00 GMT"


@pytest.fixture(params=["memory", "httpx"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    async with contextlib.AsyncExitStack() as stack:
        real = await stack.enter_async_context(HttpxWebhookSender(timeout_seconds=5))

        async def memory(statuses: list[int]) -> tuple[WebhookSender, str, str]:
            sender = InMemoryWebhookSender(
                WebhookReply(s, RETRY_AFTER if s in (429, 503) else "") for s in statuses)
            # Past its script, the in-memory sender plays "nothing listens".
            sender.answer(None)
            return sender, "https://hooks.example.com/x", "https://hooks.example.com/x"

        async def httpx_rig(statuses: list[int]) -> tuple[WebhookSender, str, str]:
            receiver = await stack.enter_async_context(
                webhook_receiver(statuses, retry_after=RETRY_AFTER))
            return real, f"{receiver.url}/hook", f"http://127.0.0.1:{free_port()}/hook"

        yield memory if request.param == "memory" else httpx_rig


async def test_post_returns_each_answer_status_without_following_redirects(rig: Rig) -> None:
    sender, url, _ = await rig(STATUSES)
    request = WebhookRequest(url, b'{"a":1}', {"Content-Type": "application/json"})
    replies = [await sender.post(request) for _ in STATUSES]
    assert [r.status for r in replies] == STATUSES
    # The Retry-After header comes back as sent, and only where the receiver gave one.
    assert {r.status: r.retry_after for r in replies if r.retry_after} == {
        429: RETRY_AFTER, 503: RETRY_AFTER}


async def test_no_answer_is_unavailable(rig: Rig) -> None:
    sender, _, nowhere = await rig([])
    with pytest.raises(Unavailable):
        await sender.post(WebhookRequest(nowhere, b"{}", {}))


async def test_a_header_that_cannot_be_sent_is_unavailable_without_quoting_it() -> None:
    """Policies stored before header secrets were checked may still hold one."""
    async with HttpxWebhookSender(timeout_seconds=5) as sender, webhook_receiver([200]) as hook:
        with pytest.raises(Unavailable) as caught:
            await sender.post(WebhookRequest(f"{hook.url}/hook", b"{}",
                                             {"Authorization": "Bearer tok\nSECRET"}))
    assert "SECRET" not in caught.value.message
