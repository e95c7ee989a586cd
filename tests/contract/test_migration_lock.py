"""Several processes migrating one empty database at once all succeed and leave it at the head:
SQLite's write lock or MariaDB's named lock makes them take turns."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.sql.migrate import current_revision, head_revision, lock_name, migrate
from tests.contract.conftest import MARIADB_SERVER, _execute, run_aside
from tests.support import port_open, require_service


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'opsicle.db'}"
        return
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"opsicle_lock_{secrets.token_hex(4)}"
    run_aside(_execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield f"{MARIADB_SERVER}/{name}"
    finally:
        run_aside(_execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}"))


async def test_concurrent_migrations_take_turns(empty_database: str) -> None:
    # Each call has its own engine, so on MariaDB they are separate sessions, as separate
    # processes would be.
    await asyncio.gather(*(migrate(empty_database) for _ in range(4)))
    assert await current_revision(empty_database) == head_revision()


async def test_migrations_of_two_databases_in_one_process_take_turns(tmp_path: Path) -> None:
    # Alembic runs a migration through module globals: at once, the two crossed their steps.
    urls = [f"sqlite+aiosqlite:///{tmp_path / name}.db" for name in ("one", "two")]
    await asyncio.gather(*(migrate(url) for url in urls))
    assert [await current_revision(url) for url in urls] == [head_revision()] * 2


def test_the_lock_is_per_database_and_fits_mysql_limits() -> None:
    one = lock_name(f"{MARIADB_SERVER}/one")
    assert one == "opsicle-migrate:one"
    assert one != lock_name(f"{MARIADB_SERVER}/two")
    assert len(lock_name(f"{MARIADB_SERVER}/{'x' * 80}")) <= 64
