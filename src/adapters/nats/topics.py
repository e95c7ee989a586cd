"""Queues per topic on one NATS connection: one work-queue stream, a durable consumer per topic."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs

from adapters.nats.connection import NatsOptions, connect, translate_errors
from adapters.nats.queue import NatsDelivery, NatsHealthCheck, NatsQueue, NatsQueueConfig
from domain.errors import Invalid, Unavailable
from domain.ports import HealthCheck, Queue, QueueMessage

# A long pull is made of pull requests this long: one that a restarted server forgot (they
# live in its memory only) then stalls a waiting claim for this long at most.
PULL_SLICE_SECONDS = 5.0
_TOPIC = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@attrs.frozen
class NatsTopicsConfig:
    """The stream, the subject prefix and the consumers' timings.

    Topic ``runs.<org>`` is subject ``<prefix>.runs.<org>`` with durable consumer
    ``<prefix>-runs-<org>``; the stream holds ``<prefix>.<family>.>`` for each family.
    """

    stream: str = "opsicle-runs"
    prefix: str = "opsicle"
    families: tuple[str, ...] = ("runs",)
    ack_wait_seconds: float = 30.0
    duplicate_window_seconds: float = 120.0

    @property
    def stream_subjects(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}.{family}.>" for family in self.families)

    def queue_config(self, topic: str) -> NatsQueueConfig:
        family, dot, _ = topic.partition(".")
        if not (_TOPIC.match(topic) and dot and family in self.families):
            raise Invalid(
                f"queue topic {topic!r} is not one of {', '.join(self.families)} "
                "followed by '.<name>'"
            )
        return NatsQueueConfig(
            stream=self.stream,
            subject=f"{self.prefix}.{topic}",
            durable=f"{self.prefix}-{topic.replace('.', '-')}",
            ack_wait_seconds=self.ack_wait_seconds,
            duplicate_window_seconds=self.duplicate_window_seconds,
            stream_subjects=self.stream_subjects,
        )


class NatsTopicQueue:
    """One topic's queue on a shared connection; its consumer is made on first use (and
    again after a pull failed, in case the server came back without it)."""

    def __init__(self, queue: NatsQueue) -> None:
        self._queue = queue
        self._ready = False
        self._lock = asyncio.Lock()

    async def _ensure(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                if not self._queue.client.is_connected:
                    raise Unavailable(f"NATS at {self._queue.address} is not connected")
                await self._queue.ensure_consumer()
                self._ready = True

    async def publish(self, message: QueueMessage) -> None:
        # The stream keeps the message whether or not the topic's consumer exists yet.
        await self._queue.publish(message)

    async def pull(self, timeout_seconds: float) -> NatsDelivery | None:
        await self._ensure()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_seconds)
        try:
            while True:
                remaining = deadline - loop.time()
                delivery = await self._queue.pull(min(max(remaining, 0.0), PULL_SLICE_SECONDS))
                if delivery is not None or remaining <= PULL_SLICE_SECONDS:
                    return delivery
        except Unavailable:
            self._ready = False
            raise

    async def depth(self) -> int:
        """Messages of this topic not yet acked (waiting, or delivered and unsettled)."""
        await self._ensure()
        q = self._queue
        with translate_errors(q.address, f"read consumer {q.config.durable}"):
            info = await q.client.jetstream(
                timeout=q.options.request_timeout_seconds
            ).consumer_info(q.config.stream, q.config.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


class NatsTopics:
    """The queues of every topic over one connection that this object opens and closes."""

    def __init__(self, anchor: NatsQueue, config: NatsTopicsConfig) -> None:
        self._anchor = anchor
        self.config = config
        self._queues: dict[str, Queue] = {}

    @classmethod
    async def open(cls, options: NatsOptions, config: NatsTopicsConfig) -> NatsTopics:
        """Connect and create the stream unless it exists; ``Unavailable`` without NATS."""
        client = await connect(options)
        # The anchor is the stream's own handle: health checks and set-up go through it.
        anchor = NatsQueue(client, options, config.queue_config(f"{config.families[0]}.health"))
        try:
            await anchor.ensure_stream_only()
        except BaseException:
            await anchor.close()
            raise
        return cls(anchor, config)

    def queue(self, topic: str) -> Queue:
        if topic not in self._queues:
            anchor = self._anchor
            inner = NatsQueue(anchor.client, anchor.options, self.config.queue_config(topic))
            self._queues[topic] = NatsTopicQueue(inner)
        return self._queues[topic]

    def health_check(self) -> HealthCheck:
        return NatsHealthCheck(self._anchor)

    async def close(self) -> None:
        """Close the connection; un-acked deliveries return to the stream after the ack wait."""
        await self._anchor.close()


@asynccontextmanager
async def nats_topics(
    options: NatsOptions, config: NatsTopicsConfig | None = None
) -> AsyncIterator[tuple[Callable[[str], Queue], HealthCheck]]:
    """Queues by topic and a readiness check, on one connection closed on exit."""
    topics = await NatsTopics.open(options, config or NatsTopicsConfig())
    try:
        yield topics.queue, topics.health_check()
    finally:
        await topics.close()
