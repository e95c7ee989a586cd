"""An in-process work queue with acks, delayed naks and redelivery after an ack wait."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict

import attrs

from domain.ports import QueueMessage

DEFAULT_ACK_WAIT_SECONDS = 30.0
DEFAULT_DEDUPE_WINDOW_SECONDS = 120.0  # JetStream's default duplicate window


@attrs.define
class _Entry:
    message: QueueMessage
    attempt: int = 0
    # Bumped on every delivery, ack and nak: a heap slot or a Delivery holding an older
    # generation is stale and is ignored.
    generation: int = 0


class InMemoryDelivery:
    """One delivery of a message; settling it after the queue has moved on does nothing."""

    def __init__(self, queue: InMemoryQueue, message: QueueMessage, attempt: int,
                 generation: int) -> None:
        self.message = message
        self.attempt = attempt
        self._queue = queue
        self._generation = generation

    async def ack(self) -> None:
        await self._queue._ack(self.message.id, self._generation)

    async def nak(self, delay_seconds: float = 0) -> None:
        await self._queue._nak(self.message.id, self._generation, delay_seconds)


class InMemoryQueue:
    """The Queue port in one process: durable for the process's life, not across restarts.

    A pulled message is invisible until acked; a nak, or no ack within ``ack_wait_seconds``,
    makes it visible again and the next delivery counts one more attempt. Messages become
    visible in order of when they became visible, first published first.
    """

    def __init__(self, *, ack_wait_seconds: float = DEFAULT_ACK_WAIT_SECONDS,
                 dedupe_window_seconds: float = DEFAULT_DEDUPE_WINDOW_SECONDS) -> None:
        if ack_wait_seconds <= 0:
            raise ValueError("ack_wait_seconds must be positive")
        self._ack_wait = ack_wait_seconds
        self._dedupe_window = dedupe_window_seconds
        self._entries: dict[str, _Entry] = {}
        # (visible_at, sequence, message id, generation): the next message to hand out.
        self._heap: list[tuple[float, int, str, int]] = []
        self._sequence = itertools.count()
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> publish time
        self._changed = asyncio.Condition()

    async def publish(self, message: QueueMessage) -> None:
        now = _now()
        self._forget_old_ids(now)
        if message.id in self._seen or message.id in self._entries:
            return
        self._seen[message.id] = now
        entry = self._entries[message.id] = _Entry(message)
        self._schedule(message.id, entry, now)
        async with self._changed:
            self._changed.notify_all()

    async def pull(self, timeout_seconds: float) -> InMemoryDelivery | None:
        deadline = _now() + max(timeout_seconds, 0.0)
        async with self._changed:
            while True:
                now = _now()
                delivery = self._take(now)
                if delivery is not None:
                    return delivery
                if now >= deadline:
                    return None
                # Wake for a publish or nak, or when the earliest delayed message turns visible.
                wait = deadline - now
                if self._heap:
                    wait = min(wait, self._heap[0][0] - now)
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        await self._changed.wait()
                except TimeoutError:
                    pass

    async def depth(self) -> int:
        return len(self._entries)

    def _take(self, now: float) -> InMemoryDelivery | None:
        while self._heap and self._heap[0][0] <= now:
            _, _, message_id, generation = heapq.heappop(self._heap)
            entry = self._entries.get(message_id)
            if entry is None or entry.generation != generation:
                continue
            entry.attempt += 1
            # Until acked, the message comes back when the ack wait runs out.
            self._schedule(message_id, entry, now + self._ack_wait)
            return InMemoryDelivery(self, entry.message, entry.attempt, entry.generation)
        return None

    async def _ack(self, message_id: str, generation: int) -> None:
        entry = self._entries.get(message_id)
        if entry is not None and entry.generation == generation:
            del self._entries[message_id]

    async def _nak(self, message_id: str, generation: int, delay_seconds: float) -> None:
        entry = self._entries.get(message_id)
        if entry is None or entry.generation != generation:
            return
        self._schedule(message_id, entry, _now() + max(delay_seconds, 0.0))
        async with self._changed:
            self._changed.notify_all()

    def _schedule(self, message_id: str, entry: _Entry, visible_at: float) -> None:
        entry.generation += 1
        heapq.heappush(self._heap, (visible_at, next(self._sequence), message_id,
                                    entry.generation))

    def _forget_old_ids(self, now: float) -> None:
        while self._seen:
            oldest_id, published = next(iter(self._seen.items()))
            if now - published < self._dedupe_window:
                return
            del self._seen[oldest_id]


def _now() -> float:
    # Queue timing is real time on the running loop, like the brokers it stands in for.
    return asyncio.get_running_loop().time()
