"""The run queues kept in the platform's store: a unit of work enqueues (through its outbox)
and takes messages in its own transaction. In memory, on SQLite and on MariaDB."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.repositories import InMemoryPlatformStore
from adapters.sql.engine import create_engine
from adapters.sql.queue import sql_queue
from adapters.sql.repositories import SqlUnitOfWork
from domain.errors import Conflict
from domain.outbox import OutboxMessage
from domain.ports import QueueMessage, StoreQueues, UnitOfWork, UnitOfWorkFactory


@pytest.fixture
def units(sql_engine: AsyncEngine | None) -> UnitOfWorkFactory:
    if sql_engine is None:
        return InMemoryPlatformStore(enqueue=True).unit_of_work
    return lambda: SqlUnitOfWork(sql_engine, enqueue=True)


@pytest.fixture
def topic() -> str:
    return f"runs.{secrets.token_hex(6)}"


def queues_of(uow: UnitOfWork) -> StoreQueues:
    assert uow.queues is not None
    return uow.queues


async def enqueue(units: UnitOfWorkFactory, topic: str, *bodies: bytes) -> list[str]:
    ids = [secrets.token_hex(8) for _ in bodies]
    async with units() as uow:
        for message_id, body in zip(ids, bodies, strict=True):
            await uow.outbox.add(OutboxMessage(message_id, topic, body, datetime.now(UTC)))
        await uow.commit()
    return ids


async def take(units: UnitOfWorkFactory, topic: str, *, commit: bool = True
               ) -> QueueMessage | None:
    async with units() as uow:
        message = await queues_of(uow).take(topic)
        if commit:
            await uow.commit()
        return message


async def test_messages_are_taken_oldest_first_and_once(units: UnitOfWorkFactory,
                                                        topic: str) -> None:
    ids = await enqueue(units, topic, b"one", b"two")
    first = await take(units, topic)
    second = await take(units, topic)
    assert first == QueueMessage(ids[0], b"one")
    assert second == QueueMessage(ids[1], b"two")
    assert await take(units, topic) is None


async def test_a_take_that_is_not_committed_leaves_the_message(units: UnitOfWorkFactory,
                                                               topic: str) -> None:
    [message_id] = await enqueue(units, topic, b"body")
    assert await take(units, topic, commit=False) == QueueMessage(message_id, b"body")
    assert await take(units, topic) == QueueMessage(message_id, b"body")
    assert await take(units, topic) is None


async def test_topics_are_separate(units: UnitOfWorkFactory, topic: str) -> None:
    await enqueue(units, topic, b"mine")
    assert await take(units, f"{topic}.other") is None
    taken = await take(units, topic)
    assert taken is not None and taken.body == b"mine"


async def test_a_taken_message_s_id_is_not_enqueued_again(units: UnitOfWorkFactory,
                                                          topic: str) -> None:
    [message_id] = await enqueue(units, topic, b"body")
    assert await take(units, topic) is not None
    async with units() as uow:
        with pytest.raises(Conflict):
            await uow.outbox.add(OutboxMessage(message_id, topic, b"again", datetime.now(UTC)))
    assert await take(units, topic) is None


async def test_takers_at_once_never_take_the_same_message(units: UnitOfWorkFactory,
                                                          topic: str) -> None:
    ids = await enqueue(units, topic, *(f"m{i}".encode() for i in range(20)))

    async def taker() -> list[str]:
        got = []
        while (message := await take(units, topic)) is not None:
            got.append(message.id)
        return got

    taken = [i for got in await asyncio.gather(*(taker() for _ in range(4))) for i in got]
    assert sorted(taken) == sorted(ids)


@pytest.mark.parametrize("backend", [
    pytest.param("sqlite"), pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def test_the_queue_port_and_takes_share_the_sql_queue(request: pytest.FixtureRequest,
                                                            backend: str, topic: str) -> None:
    engine = create_engine(request.getfixturevalue(f"{backend}_url"))
    try:
        units: UnitOfWorkFactory = lambda: SqlUnitOfWork(engine, enqueue=True)  # noqa: E731
        queue = sql_queue(engine, topic, ack_wait_seconds=60)
        first, second = await enqueue(units, topic, b"one", b"two")
        delivery = await queue.pull(0)
        assert delivery is not None and delivery.message.id == first
        # Delivered and not acked yet: not ready, so not taken.
        taken = await take(units, topic)
        assert taken is not None and taken.id == second
        assert await queue.pull(0) is None
        await delivery.ack()
        assert await take(units, topic) is None
    finally:
        await engine.dispose()
