"""The Queue contract, run against every queue adapter."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from adapters.memory.queue import InMemoryQueue
from domain.ports import Delivery, Queue, QueueMessage

# Makes a fresh, empty queue (its own stream or subject on a shared server).
QueueFactory = Callable[..., Awaitable[Queue]]

ACK_WAIT = 0.3


async def _memory(_stack: AsyncExitStack) -> QueueFactory:
    async def make(*, ack_wait_seconds: float = 30.0) -> Queue:
        return InMemoryQueue(ack_wait_seconds=ack_wait_seconds)

    return make


# A NATS JetStream leg is one more entry: connect (skipping, or failing under CI, through
# tests.support.require_service), push the connection's close onto the stack, and make each
# queue on a stream named after a fresh uuid with the given ack wait.
LEGS: dict[str, Callable[[AsyncExitStack], Awaitable[QueueFactory]]] = {"memory": _memory}


@pytest.fixture(params=sorted(LEGS))
async def make_queue(request: pytest.FixtureRequest) -> AsyncIterator[QueueFactory]:
    async with AsyncExitStack() as stack:
        yield await LEGS[request.param](stack)


@pytest.fixture
async def queue(make_queue: QueueFactory) -> Queue:
    return await make_queue()


def message(body: bytes = b"body") -> QueueMessage:
    return QueueMessage(id=uuid.uuid4().hex, body=body)


async def pull(queue: Queue, wait: float = 2.0) -> Delivery:
    delivery = await queue.pull(wait)
    assert delivery is not None, "expected a message"
    return delivery


async def test_empty_queue_pull_returns_none_after_the_timeout(queue: Queue) -> None:
    assert await queue.pull(0.05) is None
    assert await queue.depth() == 0


async def test_published_message_is_delivered_with_its_body(queue: Queue) -> None:
    sent = message(b"\x00payload\xff")
    await queue.publish(sent)
    assert await queue.depth() == 1
    delivery = await pull(queue)
    assert delivery.message == sent
    assert delivery.attempt == 1


async def test_messages_come_in_publish_order(queue: Queue) -> None:
    sent = [message(str(i).encode()) for i in range(5)]
    for m in sent:
        await queue.publish(m)
    got = []
    for _ in sent:
        delivery = await pull(queue)
        got.append(delivery.message)
        await delivery.ack()
    assert got == sent


async def test_duplicate_publish_is_dropped(queue: Queue) -> None:
    sent = message()
    await queue.publish(sent)
    await queue.publish(QueueMessage(id=sent.id, body=b"other body"))
    assert await queue.depth() == 1
    delivery = await pull(queue)
    assert delivery.message == sent
    await delivery.ack()
    assert await queue.pull(0.1) is None


async def test_republish_after_ack_is_dropped_within_the_window(queue: Queue) -> None:
    # An outbox relay that crashed after publishing republishes; the run must not run twice.
    sent = message()
    await queue.publish(sent)
    await (await pull(queue)).ack()
    await queue.publish(sent)
    assert await queue.depth() == 0
    assert await queue.pull(0.1) is None


async def test_pulled_message_is_invisible_until_acked(queue: Queue) -> None:
    await queue.publish(message())
    delivery = await pull(queue)
    assert await queue.pull(0.1) is None
    assert await queue.depth() == 1
    await delivery.ack()
    assert await queue.depth() == 0
    assert await queue.pull(0.1) is None


async def test_ack_twice_is_harmless(queue: Queue) -> None:
    await queue.publish(message())
    delivery = await pull(queue)
    await delivery.ack()
    await delivery.ack()
    assert await queue.depth() == 0


async def test_nak_redelivers_and_counts_the_attempt(queue: Queue) -> None:
    sent = message()
    await queue.publish(sent)
    first = await pull(queue)
    await first.nak()
    second = await pull(queue)
    assert second.message == sent
    assert second.attempt == 2
    await second.ack()
    assert await queue.depth() == 0


async def test_nak_with_delay_holds_the_message_back(queue: Queue) -> None:
    await queue.publish(message())
    await (await pull(queue)).nak(delay_seconds=0.5)
    assert await queue.pull(0.1) is None
    assert await queue.depth() == 1
    delivery = await pull(queue, wait=2.0)
    assert delivery.attempt == 2


async def test_delayed_message_does_not_block_later_ones(queue: Queue) -> None:
    first, second = message(b"1"), message(b"2")
    await queue.publish(first)
    await queue.publish(second)
    await (await pull(queue)).nak(delay_seconds=5)
    assert (await pull(queue)).message == second


async def test_unacked_delivery_comes_back_after_the_ack_wait(make_queue: QueueFactory) -> None:
    queue = await make_queue(ack_wait_seconds=ACK_WAIT)
    sent = message()
    await queue.publish(sent)
    first = await pull(queue)
    assert first.attempt == 1
    again = await pull(queue, wait=ACK_WAIT * 10)
    assert again.message == sent
    assert again.attempt == 2
    await again.ack()
    assert await queue.depth() == 0


async def test_waiting_pull_wakes_on_publish(queue: Queue) -> None:
    waiting = asyncio.create_task(queue.pull(5.0))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    sent = message()
    await queue.publish(sent)
    delivery = await asyncio.wait_for(waiting, 2.0)
    assert delivery is not None
    assert delivery.message == sent


async def test_each_message_goes_to_one_consumer_at_a_time(queue: Queue) -> None:
    sent = [message(str(i).encode()) for i in range(20)]
    for m in sent:
        await queue.publish(m)

    async def consume() -> list[str]:
        got = []
        while (delivery := await queue.pull(0.2)) is not None:
            got.append(delivery.message.id)
            await delivery.ack()
        return got

    results = await asyncio.gather(*(consume() for _ in range(4)))
    received = [i for r in results for i in r]
    assert sorted(received) == sorted(m.id for m in sent)
    assert await queue.depth() == 0
