"""Runs keep their sealed secret values (migration 0004), on every platform store backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from alembic import command

from adapters.sql.engine import create_engine
from adapters.sql.migrate import alembic_config, current_revision, migrate
from adapters.sql.repositories import SqlUnitOfWork
from domain.ports import UnitOfWork, UnitOfWorkFactory
from tests.contract import builders as b
from tests.contract.builders import uid
from tests.contract.test_migrations import _migrated_from_0002, empty_url  # noqa: F401


@pytest.fixture
async def uow(uow_factory: UnitOfWorkFactory) -> AsyncIterator[UnitOfWork]:
    async with uow_factory() as unit:
        yield unit


async def test_sealed_secrets_round_trip(uow: UnitOfWork) -> None:
    sealed = "gAAAAAB" + "x" * 5000  # Fernet tokens are long; LONGTEXT on MariaDB
    run = b.run(org_id=uid("org"), sealed_secrets=sealed)
    plain = b.run(org_id=uid("org"))
    await uow.runs.add(run)
    await uow.runs.add(plain)
    assert await uow.runs.get(run.id) == run
    assert (await uow.runs.get(plain.id)).sealed_secrets == ""


async def test_runs_stored_before_0004_have_no_secrets_and_0004_downgrades(
    empty_url: str,  # noqa: F811
) -> None:
    ids = await _migrated_from_0002(empty_url)  # migrates on to the head, 0004
    engine = create_engine(empty_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            assert (await uow.runs.get(ids.queued)).sealed_secrets == ""
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0003"))
        assert await current_revision(empty_url) == "0003"
        await migrate(empty_url)
        async with SqlUnitOfWork(engine) as uow:
            assert (await uow.runs.get(ids.queued)).sealed_secrets == ""
    finally:
        await engine.dispose()


async def test_signed_grants_round_trip(uow: UnitOfWork) -> None:
    run = b.run(org_id=uid("org"), grant="eyJ2IjoxfQ." + "s" * 86)
    plain = b.run(org_id=uid("org"))
    await uow.runs.add(run)
    await uow.runs.add(plain)
    assert await uow.runs.get(run.id) == run
    assert (await uow.runs.get(plain.id)).grant == ""
