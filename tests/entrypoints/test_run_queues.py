"""Where the roles' units of work put queue messages: straight on the SQL queue as they commit
when it is the run queue (no ``nats-url``), in the outbox for the relay when NATS is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql.queue import SqlQueue
from adapters.sql.repositories import unit_of_work_factory
from domain.outbox import OutboxMessage
from domain.services.dispatch import run_topic
from domain.services.platform import Platform
from entrypoints import bootstrap, settings


@asynccontextmanager
async def stores(
    tmp_path: Path, nats_url: str | None
) -> AsyncIterator[tuple[Platform, AsyncEngine]]:
    resolved = settings.load(
        None, {"XDG_CONFIG_HOME": str(tmp_path)}, data_dir=str(tmp_path / "data")
    ).with_flags(nats_url=nats_url)
    async with bootstrap._embedded_stores(resolved) as (platform, _, engine, _):
        yield platform, engine


def message(p: Platform) -> OutboxMessage:
    return OutboxMessage(p.ids.new_id(), run_topic(p.ids.new_id()), b"{}", p.clock.now())


@pytest.mark.parametrize(
    ("nats_url", "queued"),
    # Nothing listens on port 9: building the platform does not connect to NATS.
    [(None, True), ("nats://127.0.0.1:9", False)],
    ids=["sql-queue", "nats"],
)
async def test_a_committed_message_is_queued_at_once_only_on_the_sql_queue(
    tmp_path: Path, nats_url: str | None, queued: bool
) -> None:
    async with stores(tmp_path, nats_url) as (p, engine):
        sent = message(p)
        async with p.uow() as uow:
            await uow.outbox.add(sent)
            await uow.commit()
        async with p.uow() as uow:
            pending = [m.id for m in await uow.outbox.pending(100)]
        depth = await SqlQueue(engine, sent.topic).depth()
    assert (depth, pending) == ((1, []) if queued else (0, [sent.id]))


async def test_on_the_sql_queue_the_relay_still_publishes_what_another_version_left(
    tmp_path: Path,
) -> None:
    async with stores(tmp_path, None) as (p, engine):
        left = message(p)
        async with unit_of_work_factory(engine)() as uow:  # a unit of work that does not enqueue
            await uow.outbox.add(left)
            await uow.commit()
        async with bootstrap.coordination(p, bootstrap._queues(engine), enqueued=True):
            queue = SqlQueue(engine, left.topic)
            delivery = await queue.pull(3 * bootstrap.ENQUEUED_RELAY_INTERVAL)
        assert delivery is not None and delivery.message.id == left.id
        async with p.uow() as uow:
            assert await uow.outbox.pending(100) == []
