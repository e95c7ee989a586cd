"""Alembic migrations run from inside the package, without alembic.ini (works when frozen).

Several processes may migrate one database at once (roles started together with
``--migrate``): on SQLite the migration holds the write lock from its first statement
(``BEGIN IMMEDIATE``), on MySQL/MariaDB a named lock (``GET_LOCK``) for the database; either
way they take turns, and every one after the first finds nothing left to do. Within one
process, migrations take turns whatever their database: Alembic keeps the migration it runs
in module globals (``alembic.context``, ``alembic.op``), so two at once would run each
other's steps on each other's connection.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.probes import mask_url
from adapters.sql.engine import (
    SQLITE_BEGIN,
    DatabaseOptions,
    create_engine,
    is_sqlite,
    store_name,
    translate_errors,
)
from adapters.sql.sqlite_driver import on_thread
from domain.errors import FieldError, Invalid, SchemaMismatch, Unavailable

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Held by the migration this process runs (see the module).
_MIGRATING = threading.Lock()
# How long a migration waits for another process's migration of the same database.
LOCK_WAIT_SECONDS = 600


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    # env.py runs the migrations on this connection instead of opening its own.
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this version of Opsicle knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations have one head"
    return head


def known_revision(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def lock_name(url: str) -> str:
    """The MySQL/MariaDB lock taken while migrating: one per database (names are server-wide,
    at most 64 characters)."""
    return f"opsicle-migrate:{sa.make_url(url).database}"[:64]


async def migrate(url: str, revision: str = "head", *,
                  lock_wait_seconds: float = LOCK_WAIT_SECONDS,
                  options: DatabaseOptions | None = None) -> None:
    """Upgrade the database at ``url`` to ``revision``; an up-to-date database is left as is.

    Safe when several processes call it at once, or several tasks (see the module).
    """
    # Waited for on a thread: the lock is held across awaits, by another task of this loop
    # or of another loop. Cancelled meanwhile, the lock is let go once the thread has it.
    await on_thread(_MIGRATING.acquire, lambda _: _MIGRATING.release())
    try:
        await _migrate(url, revision, lock_wait_seconds, options)
    finally:
        _MIGRATING.release()


async def _migrate(url: str, revision: str, lock_wait_seconds: float,
                   options: DatabaseOptions | None) -> None:
    sqlite = is_sqlite(url)
    # SQLite: the write lock from BEGIN on, so a second migrator waits instead of racing.
    engine = create_engine(url, execution_options={SQLITE_BEGIN: "IMMEDIATE"}) if sqlite \
        else create_engine(url, options)

    def upgrade(sync: Connection) -> None:
        command.upgrade(alembic_config(sync), revision)

    try:
        with translate_errors(store_name(url)):
            if sqlite:
                async with engine.begin() as conn:
                    await conn.run_sync(upgrade)
            else:
                async with engine.connect() as conn:
                    await _locked(conn, url, lock_wait_seconds)
                    try:
                        await conn.run_sync(upgrade)
                        await conn.commit()
                    finally:
                        # Ending the session would release it too; a broken one is closed.
                        with contextlib.suppress(sa.exc.SQLAlchemyError):
                            await conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"),
                                               {"name": lock_name(url)})
    except CommandError as exc:
        raise Invalid(f"cannot migrate to {revision}", errors=(
            FieldError("revision", f"{exc}; expected a revision such as 0001, or head"),
        )) from exc
    finally:
        await engine.dispose()


async def _locked(conn: AsyncConnection, url: str, wait_seconds: float) -> None:
    got = (await conn.execute(sa.text("SELECT GET_LOCK(:name, :wait)"),
                              {"name": lock_name(url), "wait": wait_seconds})).scalar()
    if got != 1:
        raise Unavailable(
            f"{store_name(url)}: another process held the migration lock "
            f"'{lock_name(url)}' for {wait_seconds:g} s; try again when it is done")


async def current_revision(url: str, options: DatabaseOptions | None = None) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(url, options)
    try:
        with translate_errors(store_name(url)):
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()


def schema_problem(url: str, current: str | None, *, may_migrate: bool) -> str | None:
    """What keeps a role from using a database at ``current``, or None when nothing does."""
    head = head_revision()
    if current == head:
        return None
    where = f"the database at {mask_url(url)}"
    if current is not None and not known_revision(current):
        return (f"{where} is at schema revision {current}, which this version of Opsicle does "
                f"not know (it knows up to {head}): upgrade Opsicle")
    if may_migrate:
        return None
    return (f"{where} is at schema revision {current or 'none (empty)'}, this version of "
            f"Opsicle needs {head}: run 'opsicle run migrations' or start with --migrate")


async def prepare_schema(
    url: str, *, may_migrate: bool, options: DatabaseOptions | None = None
) -> None:
    """Bring the schema to the head when ``may_migrate``, else check it is there already;
    ``SchemaMismatch`` names the database, its revision and what to do."""
    current = await current_revision(url, options)
    problem = schema_problem(url, current, may_migrate=may_migrate)
    if problem:
        raise SchemaMismatch(problem)
    if current != head_revision():
        await migrate(url, options=options)
