"""The webhook delivery loop the controller, coordinator and standalone roles run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from domain.ports import Clock, WebhookSender
from domain.services.platform import Platform

# How often due webhook deliveries are looked for (a retry waits at least 5 s anyway).
WEBHOOK_INTERVAL = 2.0
# How long delivered and given-up deliveries are kept (the webhook-retention-days setting).
RETENTION = timedelta(days=30)


@asynccontextmanager
async def webhook_delivery(
    platform: Platform,
    *,
    sender: WebhookSender | None = None,
    interval: float = WEBHOOK_INTERVAL,
    loop_clock: Clock | None = None,
    timeout_seconds: float | None = None,
    retention: timedelta = RETENTION,
) -> AsyncIterator[None]:
    """Send due webhook deliveries every ``interval`` until the block ends (httpx, each
    attempt waiting ``timeout_seconds`` for an answer, unless a ``sender`` is given), and
    purge those finished more than ``retention`` ago; several processes may run this on one
    store."""
    from domain.services.webhooks import DELIVERY_BATCH, PURGE_BATCH, deliver_due, purge_finished
    from entrypoints.loops import Purge, service_loop, stop_tasks

    async with AsyncExitStack() as stack:
        if sender is None:
            from adapters.http.webhooks import DEFAULT_TIMEOUT_SECONDS, HttpxWebhookSender

            sender = await stack.enter_async_context(HttpxWebhookSender(
                timeout_seconds=timeout_seconds or DEFAULT_TIMEOUT_SECONDS))
        chosen = sender
        purge = Purge(lambda: purge_finished(platform, retention), platform.clock, PURGE_BATCH)

        async def deliver() -> None:
            # A full batch means more are due: keep going before the next pause.
            while await deliver_due(platform, chosen) >= DELIVERY_BATCH:
                pass
            await purge()

        stop = asyncio.Event()
        task = asyncio.create_task(service_loop(
            "webhook delivery", deliver, stop=stop, clock=loop_clock or platform.clock,
            interval=interval))
        try:
            yield
        finally:
            stop.set()
            await stop_tasks([task], grace=5.0)
