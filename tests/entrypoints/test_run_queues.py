"""Where the roles' units of work put run queue messages, and who takes them from there.

A controller (or approver) leaves them in the outbox whatever it is configured with: it never
talks to the queue, so a controller without ``nats-url`` hands runs to coordinators on NATS.
The coordinator and standalone roles put their own straight on the queue when it is the SQL
queue, and relay what other processes left in the outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql.queue import SqlQueue
from domain.automations import RunStatus, new_run
from domain.orgs import Organisation
from domain.outbox import OutboxMessage
from domain.resources import AutomationSpec, Phase
from domain.services.dispatch import announce, run_topic
from domain.services.platform import Platform
from entrypoints import bootstrap, settings
from entrypoints.settings import Settings

# Nothing listens on port 9: building a platform does not connect to NATS.
QUEUES = pytest.mark.parametrize(
    "nats_url", [None, "nats://127.0.0.1:9"], ids=["sql-queue", "nats"]
)


def configured(tmp_path: Path, nats_url: str | None) -> Settings:
    return settings.load(
        None, {"XDG_CONFIG_HOME": str(tmp_path)}, data_dir=str(tmp_path / "data")
    ).with_flags(nats_url=nats_url)


@asynccontextmanager
async def stores(resolved: Settings) -> AsyncIterator[tuple[Platform, AsyncEngine]]:
    async with bootstrap._embedded_stores(resolved) as (platform, _, engine, _):
        yield platform, engine


async def where_it_went(p: Platform, engine: AsyncEngine) -> tuple[int, bool]:
    """Commit one run queue message through ``p``: the SQL queue's depth, and whether the
    message waits in the outbox."""
    sent = OutboxMessage(p.ids.new_id(), run_topic(p.ids.new_id()), b"{}", p.clock.now())
    async with p.uow() as uow:
        await uow.outbox.add(sent)
        await uow.commit()
    async with p.uow() as uow:
        pending = [m.id for m in await uow.outbox.pending(100)]
    return await SqlQueue(engine, sent.topic).depth(), sent.id in pending


@QUEUES
async def test_a_controller_leaves_queue_messages_in_the_outbox(
    tmp_path: Path, nats_url: str | None
) -> None:
    async with stores(configured(tmp_path, nats_url)) as (p, engine):
        assert await where_it_went(p, engine) == (0, True)


@QUEUES
async def test_a_coordinator_puts_its_own_on_the_sql_queue_at_once(
    tmp_path: Path, nats_url: str | None
) -> None:
    resolved = configured(tmp_path, nats_url)
    async with stores(resolved) as (p, engine):
        direct, enqueued = bootstrap.enqueuing(p, engine, resolved)
        assert enqueued is (nats_url is None)
        assert await where_it_went(direct, engine) == ((1, False) if enqueued else (0, True))


async def test_standalone_runs_what_another_process_left_in_the_outbox(tmp_path: Path) -> None:
    resolved = configured(tmp_path, None).with_flags(runner="process")
    spec = AutomationSpec(phases=(Phase("greet", "busybox", ("echo from elsewhere",)),))
    async with (
        bootstrap.standalone(resolved),
        # Another process on the same database: its commits cannot wake standalone's relay.
        bootstrap.embedded_platform(resolved) as (other, _),
    ):
        org_id = other.ids.new_id()
        run, _ = new_run(other.ids.new_id(), spec, other.clock.now(), name="e", org_id=org_id)
        async with other.uow() as uow:
            await uow.orgs.add(Organisation(org_id, "Elsewhere", "elsewhere", other.clock.now()))
            await uow.runs.add(run)
            await announce(uow, other.ids, run, other.clock.now())
            await uow.commit()
        for _ in range(200):
            async with other.uow() as uow:
                found = await uow.runs.get(run.id)
            if found.status.terminal:
                break
            await asyncio.sleep(0.05)
    assert found.status is RunStatus.SUCCEEDED, found.reason
    assert b"from elsewhere" in await other.logs.read(run.id)
