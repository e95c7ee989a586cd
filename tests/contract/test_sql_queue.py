"""What only the SQL queue promises beyond the Queue contract: several processes on one table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql.engine import create_engine
from adapters.sql.queue import SqlQueue, _signal
from adapters.sql.repositories import unit_of_work_factory
from domain.outbox import OutboxMessage
from domain.ports import Delivery, QueueMessage

# Each engine stands for one process: its own pool, and no in-process wake-up from another.
EngineFactory = Callable[[], AsyncEngine]


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def engines(request: pytest.FixtureRequest) -> AsyncIterator[EngineFactory]:
    url: str = request.getfixturevalue(f"{request.param}_url")  # migrated to head
    made: list[AsyncEngine] = []

    def make() -> AsyncEngine:
        made.append(create_engine(url))
        return made[-1]

    try:
        yield make
    finally:
        for engine in made:
            await engine.dispose()


def topic() -> str:
    return f"test.{uuid.uuid4().hex}"


def message(body: bytes = b"body") -> QueueMessage:
    return QueueMessage(id=uuid.uuid4().hex, body=body)


async def pull(queue: SqlQueue, wait: float = 2.0) -> Delivery:
    delivery = await queue.pull(wait)
    assert delivery is not None, "expected a message"
    return delivery


async def test_a_waiting_pull_sees_a_publish_from_another_process(
        engines: EngineFactory) -> None:
    name = topic()
    consumer, producer = SqlQueue(engines(), name), SqlQueue(engines(), name)
    waiting = asyncio.create_task(consumer.pull(5.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    sent = message()
    await producer.publish(sent)
    delivery = await asyncio.wait_for(waiting, 2.0)
    assert delivery is not None
    assert delivery.message == sent


async def test_messages_outlive_the_process_that_published_them(
        engines: EngineFactory) -> None:
    name, sent = topic(), message(b"\x00kept\xff")
    first = engines()
    await SqlQueue(first, name).publish(sent)
    await first.dispose()
    queue = SqlQueue(engines(), name)
    assert await queue.depth() == 1
    delivery = await pull(queue)
    assert (delivery.message, delivery.attempt) == (sent, 1)


async def test_topics_on_one_table_are_separate_queues(engines: EngineFactory) -> None:
    engine = engines()
    runs_a, runs_b = SqlQueue(engine, topic()), SqlQueue(engine, topic())
    sent = message()
    await runs_a.publish(sent)
    await runs_b.publish(sent)  # the same id on another topic is another message
    assert (await runs_a.depth(), await runs_b.depth()) == (1, 1)
    await (await pull(runs_a)).ack()
    assert await runs_a.pull(0.1) is None
    assert (await pull(runs_b)).message == sent


async def test_concurrent_consumers_in_several_processes_share_out_each_message_once(
        engines: EngineFactory) -> None:
    name = topic()
    queues = [SqlQueue(engines(), name) for _ in range(3)]
    sent = [message(str(i).encode()) for i in range(30)]
    for m in sent:
        await queues[0].publish(m)

    async def consume(queue: SqlQueue) -> list[str]:
        got = []
        while (delivery := await queue.pull(0.3)) is not None:
            got.append(delivery.message.id)
            await delivery.ack()
        return got

    results = await asyncio.gather(*(consume(q) for q in queues for _ in range(2)))
    received = [i for r in results for i in r]
    assert sorted(received) == sorted(m.id for m in sent)
    assert await queues[1].depth() == 0


async def test_a_delivery_that_timed_out_cannot_settle_the_next_one(
        engines: EngineFactory) -> None:
    # The current delivery must stay held through the steps below, however loaded the host.
    queue = SqlQueue(engines(), topic(), ack_wait_seconds=1.0)
    await queue.publish(message())
    stale = await pull(queue)
    await asyncio.sleep(1.1)
    current = await pull(queue)
    assert (stale.attempt, current.attempt) == (1, 2)
    await stale.ack()
    await stale.nak()
    assert await queue.depth() == 1
    assert await queue.pull(0.1) is None  # still held by the current delivery
    await current.ack()
    assert await queue.depth() == 0


async def test_an_acked_id_is_accepted_again_once_the_dedupe_window_passed(
        engines: EngineFactory) -> None:
    queue = SqlQueue(engines(), topic(), dedupe_window_seconds=0.3)
    sent = message()
    await queue.publish(sent)
    await (await pull(queue)).ack()
    await queue.publish(sent)
    assert await queue.depth() == 0
    await asyncio.sleep(0.4)
    await queue.publish(sent)
    delivery = await pull(queue)
    assert (delivery.message, delivery.attempt) == (sent, 1)


async def test_an_enqueuing_unit_of_work_puts_its_message_on_the_queue_as_it_commits(
        engines: EngineFactory) -> None:
    engine = engines()
    name = topic()
    queue = SqlQueue(engine, name)
    units = unit_of_work_factory(engine, enqueue=True)
    dropped = message()
    async with units() as uow:
        await uow.outbox.add(OutboxMessage(dropped.id, name, dropped.body, datetime.now(UTC)))
        await uow.rollback()
    assert await queue.depth() == 0
    # A pull already waiting is woken by the commit, long before its next look at the table.
    waiting = asyncio.create_task(queue.pull(5.0))
    sent = message()
    async with units() as uow:
        await uow.outbox.add(OutboxMessage(sent.id, name, sent.body, datetime.now(UTC)))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # not visible before the commit
        seen = _signal(engine, name).version
        await uow.commit()
        # The commit itself wakes this process's pulls, not only their next poll.
        assert _signal(engine, name).version > seen
        # Nothing is left for a relay to publish.
        assert sent.id not in [m.id for m in await uow.outbox.pending(1000)]
    delivery = await asyncio.wait_for(waiting, 2.0)
    assert delivery is not None and (delivery.message, delivery.attempt) == (sent, 1)
    await delivery.ack()
    assert await queue.depth() == 0


def test_a_queue_needs_a_topic_and_a_positive_ack_wait() -> None:
    engine = create_engine("sqlite+aiosqlite://")
    with pytest.raises(ValueError, match="topic"):
        SqlQueue(engine, "")
    with pytest.raises(ValueError, match="ack_wait"):
        SqlQueue(engine, "t", ack_wait_seconds=0)
