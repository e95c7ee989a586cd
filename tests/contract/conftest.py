"""Backends for the contract suites: in memory, SQLite in a temporary file, and MariaDB."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.repositories import InMemoryPlatformStore
from adapters.memory.run_logs import InMemoryRunLogStore
from adapters.sql.audit import SqlAuditLog
from adapters.sql.engine import create_engine
from adapters.sql.migrate import migrate
from adapters.sql.repositories import SqlUnitOfWork
from adapters.sql.run_logs import SqlRunLogStore
from domain.ports import AuditLog, RunLogStore, UnitOfWorkFactory
from tests.support import port_open, require_service

MARIADB_SERVER = "mysql+asyncmy://root@127.0.0.1:3306"
T = TypeVar("T")

BACKENDS = [
    pytest.param("memory"),
    pytest.param("sqlite"),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on a loop of its own thread, away from the tests' loops."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated SQLite file for the session; tests use unique ids so they can share it."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'opsicle.db'}"
    run_aside(migrate(url))
    return url


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A fresh, migrated database on the local MariaDB, dropped when the session ends."""
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"opsicle_test_{secrets.token_hex(4)}"
    run_aside(_execute(f"{MARIADB_SERVER}/",
                       f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4"))
    try:
        url = f"{MARIADB_SERVER}/{name}"
        run_aside(migrate(url))
        yield url
    finally:
        run_aside(_execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """The backend's name and, for SQL ones, its migrated database URL."""
    name: str = request.param
    if name == "memory":
        return name, None
    url: str = request.getfixturevalue(f"{name}_url")
    return name, url


@pytest.fixture
async def sql_engine(store_backend: tuple[str, str | None]) -> AsyncIterator[AsyncEngine | None]:
    _, url = store_backend
    if url is None:
        yield None
        return
    eng = create_engine(url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def uow_factory(sql_engine: AsyncEngine | None) -> UnitOfWorkFactory:
    if sql_engine is None:
        return InMemoryPlatformStore().unit_of_work
    return lambda: SqlUnitOfWork(sql_engine)


@pytest.fixture
def run_logs(sql_engine: AsyncEngine | None) -> RunLogStore:
    return InMemoryRunLogStore() if sql_engine is None else SqlRunLogStore(sql_engine)


@pytest.fixture
def audit_log(sql_engine: AsyncEngine | None) -> AuditLog:
    return InMemoryAuditLog() if sql_engine is None else SqlAuditLog(sql_engine)
