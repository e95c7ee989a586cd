"""What the SQLite engine adds: this process's writers queue at a gate, and its driver."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import engine as engine_module
from adapters.sql import sqlite_driver
from adapters.sql import tables as t
from adapters.sql.engine import connect, create_engine, translate_errors
from adapters.sql.repositories import SqlUnitOfWork
from domain.errors import Conflict, NotFound, Unavailable


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    made = create_engine(sqlite_url)
    try:
        yield made
    finally:
        await made.dispose()


async def _touch(uow: SqlUnitOfWork) -> None:
    """A first statement: the transaction begins and holds the write gate."""
    with pytest.raises(NotFound):
        await uow.users.get("nobody")


async def test_a_second_writer_waits_at_the_gate_until_the_first_commits(
        engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(engine) as first:
        await _touch(first)

        async def second() -> None:
            async with SqlUnitOfWork(engine) as uow:
                await _touch(uow)
                await uow.commit()

        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await first.commit()
        await asyncio.wait_for(waiting, 5.0)


async def test_a_writer_kept_waiting_as_long_as_sqlite_would_wait_is_told_the_store_is_busy(
        engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with SqlUnitOfWork(engine) as first:
        await _touch(first)
        with pytest.raises(Unavailable, match="another writer held it"):
            async with connect(engine, write=True) as conn:
                await conn.execute(sa.select(1))
    # Readers never wait at the gate, and the gate is free again once the holder has gone.
    async with connect(engine, write=False) as conn:
        assert (await conn.execute(sa.select(1))).scalar_one() == 1
    async with SqlUnitOfWork(engine) as uow:
        await _touch(uow)


async def test_the_driver_reports_counts_keys_and_returned_rows(engine: AsyncEngine) -> None:
    head = t.audit_chain_head.c
    async with connect(engine, write=True) as conn:
        result = await conn.execute(
            sa.update(t.audit_chain_head).where(head.id == 1).values(last_seq=head.last_seq))
        assert result.rowcount == 1
        returned = await conn.execute(
            sa.update(t.audit_chain_head).where(head.id == 1).values(last_seq=head.last_seq)
            .returning(head.id))
        assert returned.all() == [(1,)]
        await conn.rollback()


async def test_statements_run_in_the_event_loops_thread(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        raw.create_function("thread_id", 0, threading.get_ident)
        ran_in = (await conn.execute(sa.text("SELECT thread_id()"))).scalar_one()
    assert ran_in == threading.get_ident()


async def test_a_lock_held_by_another_process_is_waited_for_off_the_event_loop(
        engine: AsyncEngine, sqlite_url: str) -> None:
    # Another process's writer: a plain connection of its own, holding the write lock.
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        async with SqlUnitOfWork(engine) as uow:
            touched = asyncio.create_task(_touch(uow))
            await asyncio.sleep(0.3)
            assert not touched.done()  # waiting for the lock ...
            assert ticks >= 10  # ... while the event loop goes on
            other.execute("COMMIT")
            await asyncio.wait_for(touched, 5.0)
            # The wait ended in a transaction holding the write lock, as without one.
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
            await uow.commit()
            other.execute("BEGIN IMMEDIATE")
            other.execute("COMMIT")
    finally:
        ticker.cancel()
        other.close()


async def test_the_write_ahead_log_is_checkpointed_every_so_many_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sqlite_driver, "_commits", {})
    path = tmp_path / "wal.db"
    made = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with connect(made, write=True) as conn:
            await conn.execute(sa.text("CREATE TABLE big (v BLOB)"))
            await conn.commit()
        sizes = []
        for _ in range(4):
            async with connect(made, write=True) as conn:
                await conn.execute(sa.text("INSERT INTO big VALUES (:v)"), {"v": b"x" * 200_000})
                await conn.commit()
            # Commits that changed no rows are not counted.
            async with connect(made, write=False) as conn:
                await conn.execute(sa.text("SELECT count(*) FROM big"))
                await conn.commit()
            sizes.append(path.stat().st_size)
        # Four commits that wrote: the rows are in the write-ahead log, not yet in the file ...
        assert sizes[-1] == sizes[0] < 200_000
        async with connect(made, write=True) as conn:
            await conn.execute(sa.text("INSERT INTO big VALUES (:v)"), {"v": b"x" * 200_000})
            await conn.commit()
        # ... until the fifth commit's checkpoint copies them over.
        assert path.stat().st_size > 800_000
    finally:
        await made.dispose()


async def test_a_statement_cancelled_while_it_waits_for_a_lock_leaves_no_lock_behind(
        engine: AsyncEngine, sqlite_url: str) -> None:
    other = sqlite3.connect(sqlite_url.split("///", 1)[1], isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with SqlUnitOfWork(engine) as uow:
            touched = asyncio.create_task(_touch(uow))
            await asyncio.sleep(0.2)
            touched.cancel()
            await asyncio.sleep(0.2)
            # The cancelled statement's thread is still waiting for the lock; the unit cannot
            # end before it does.
            assert not touched.done()
            other.execute("COMMIT")
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(touched, 5.0)
        # The cancelled unit took the lock in the end, and gave it back when it left.
        other.execute("BEGIN IMMEDIATE")
        other.execute("COMMIT")
        async with SqlUnitOfWork(engine) as uow:
            await _touch(uow)
            await uow.commit()
    finally:
        other.close()


DEFERRED_KEYS = [
    "CREATE TABLE IF NOT EXISTS parents (id INTEGER PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS children (parent INTEGER REFERENCES parents (id) "
    "DEFERRABLE INITIALLY DEFERRED)",
]


async def test_an_error_at_commit_is_a_store_error_and_ends_the_transaction(
        engine: AsyncEngine) -> None:
    # A deferred foreign key is checked at COMMIT: a commit that SQLite refuses.
    async with connect(engine, write=True) as conn:
        for statement in DEFERRED_KEYS:
            await conn.execute(sa.text(statement))
        await conn.commit()
    async with engine.connect() as conn:

        async def orphan() -> None:
            with translate_errors("the test database"):
                async with conn.begin():
                    await conn.execute(sa.text("INSERT INTO children VALUES (404)"))

        with pytest.raises(Conflict, match="FOREIGN KEY constraint failed"):
            await orphan()
        assert not conn.in_transaction()
        async with conn.begin():
            await conn.execute(sa.text("INSERT INTO parents VALUES (1)"))
            await conn.execute(sa.text("INSERT INTO children VALUES (1)"))
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT parent FROM children"))).all()
    assert rows == [(1,)]


# A table of every column type the platform's tables use, for the fast statement path.
_kinds = sa.MetaData()
_things = sa.Table(
    "things", _kinds,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("at", t.UtcDateTime, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("body", t.Blob),
    sa.Column("note", t.LongText),
)
_c = _things.c
_AT = datetime(2026, 11, 28, 10, 30, 15, 123456, tzinfo=UTC)


async def _fresh(conn: AsyncConnection) -> None:
    await conn.run_sync(_kinds.drop_all)
    await conn.run_sync(_kinds.create_all)
    await conn.commit()


async def _compared(conn: AsyncConnection, statement: sa.Executable,
                    params: dict[str, object] | None = None) -> tuple[Any, Any]:
    """``statement`` run the fast way and SQLAlchemy's way (each rolled back), and what
    the adapters read of each result."""
    sync = conn.sync_connection
    assert sync is not None
    assert sqlite_driver.fast_statement(sync, statement, params, None) is not None

    def read(result: Any) -> Any:
        key = result.inserted_primary_key if statement.is_insert else None
        try:
            rows = result.all()
        except sa.exc.ResourceClosedError:  # a statement that returns no rows
            return result.rowcount, key
        # (No rowcount: SQLAlchemy leaves it undefined for statements that return rows.)
        return (tuple(result.keys()), [(tuple(r), dict(r._mapping)) for r in rows]), key

    fast = read(await conn.execute(statement, params))
    await conn.rollback()
    usual = read(sync.execute(statement, params))
    sync.rollback()
    return fast, usual


async def test_statements_skip_sqlalchemys_execution_and_read_back_the_same(
        engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await _fresh(conn)
        await conn.execute(sa.insert(_things), [
            {"name": "a", "at": _AT, "done": True, "body": b"\x00\xff", "note": "x"},
            {"name": "b", "at": _AT, "done": False, "body": None, "note": None}])
        await conn.commit()
        by_name = sa.select(_things).where(_c.name == sa.bindparam("name"))
        for statement, params in [
            (by_name, {"name": "a"}),
            (sa.select(_things).where(_c.done.is_(False)), None),  # a value in the statement
            (sa.select(_c.name, sa.func.count().label("n")).group_by(_c.name), None),
            (sa.insert(_things).values(name="c", at=_AT, done=True), None),
            (sa.insert(_things), {"name": "d", "at": _AT.astimezone(), "done": False}),
            (sa.update(_things).where(_c.done.is_(True)).values(note="y"), None),
            (sa.update(_things).values(note="z").returning(_c.seq, _c.at), None),
            (sa.delete(_things).where(_c.name == "b"), None),
        ]:
            fast, usual = await _compared(conn, statement, params)
            assert fast == usual, str(statement)
        rows = (await conn.execute(by_name, {"name": "a"})).mappings().all()
        assert rows[0]["at"] == _AT and rows[0]["at"].tzinfo is UTC
        assert rows[0]["done"] is True and rows[0]["body"] == b"\x00\xff"
        assert (await conn.execute(by_name, {"name": "a"})).one()._mapping[_c.seq] == 1


async def test_statements_that_need_more_go_sqlalchemys_way(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await _fresh(conn)
        sync = conn.sync_connection
        assert sync is not None
        for statement in [
            sa.select(_things).where(_c.name.in_(["a", "b"])),  # an expanding parameter
            sa.text("SELECT 1"),
            sa.select(_things).execution_options(yield_per=10),
        ]:
            assert sqlite_driver.fast_statement(sync, statement, None, None) is None
            assert (await conn.execute(statement)).all() is not None
        assert sqlite_driver.fast_statement(sync, sa.select(_things), None,
                                            {"yield_per": 10}) is None
        many = [{"name": "e", "at": _AT, "done": True}, {"name": "f", "at": _AT, "done": True}]
        assert sqlite_driver.fast_statement(sync, sa.insert(_things), many, None) is None
        async with conn.begin_nested():  # a savepoint
            assert sqlite_driver.fast_statement(sync, sa.select(_things), None, None) is None


async def test_a_fast_statement_begins_the_transaction_tells_listeners_and_fails_clearly(
        engine: AsyncEngine) -> None:
    seen: list[str] = []

    def listener(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with engine.connect() as conn:
            await _fresh(conn)
            insert = sa.insert(_things).values(name="a", at=_AT, done=True)
            await conn.execute(insert)
            assert conn.in_transaction()
            assert seen[-1].startswith("INSERT INTO things")
            with (pytest.raises(Conflict, match=r"UNIQUE constraint failed: things\.name"),
                  translate_errors("the test database")):
                await conn.execute(insert)
            await conn.commit()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(_things))
                    ).scalar_one() == 1
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", listener)


async def test_the_connection_given_back_last_is_taken_first(engine: AsyncEngine) -> None:
    # Its page cache is the one most likely still valid.
    async with engine.connect() as first, engine.connect() as second:
        raw_first = (await first.get_raw_connection()).driver_connection
        raw_second = (await second.get_raw_connection()).driver_connection
        assert raw_first is not raw_second
    # ``second`` was given back, then ``first``.
    async with engine.connect() as again:
        assert (await again.get_raw_connection()).driver_connection is raw_first



async def test_a_closed_connection_is_taken_again_as_it_was_given(engine: AsyncEngine) -> None:
    async with engine.connect() as first:
        sync_first = first.sync_connection
        await first.execution_options(**{engine_module.SQLITE_BEGIN: "IMMEDIATE"})
        await first.execute(sa.text("SELECT 1"))
        await first.commit()
    # Closed, it cannot be used any more, though its connection lives on.
    with pytest.raises(sa.exc.InvalidRequestError):
        await first.execute(sa.text("SELECT 1"))
    async with engine.connect() as again:
        assert again.sync_connection is sync_first
        # Without the options its last user set.
        assert sqlite_driver.BEGIN_OPTION not in again.sync_connection.get_execution_options()
        await again.begin()
        await again.execute(sa.text("SELECT 1"))
        # Closed inside a transaction, it is rolled back and given back to the pool instead.
    async with engine.connect() as third:
        assert third.sync_connection is not sync_first
        assert not (await third.get_raw_connection()).driver_connection.in_transaction

async def test_a_new_connection_waits_while_another_holds_a_new_databases_lock(
        tmp_path: Path) -> None:
    """Before its journal is a write-ahead log, SQLite answers a new connection's switch to
    WAL with SQLITE_BUSY at once: the connection waits for the lock, as statements do."""
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    releasing = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    releasing.start()
    made = create_engine(f"sqlite:///{path}")
    try:
        async with made.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            tables = (await conn.exec_driver_sql("SELECT name FROM sqlite_master")).scalars()
            assert (mode, list(tables)) == ("wal", ["t"])
    finally:
        releasing.join()
        holder.close()
        await made.dispose()


async def test_disposing_of_the_engine_closes_its_parked_connections(sqlite_url: str) -> None:
    made = create_engine(sqlite_url)
    async with made.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        await conn.execute(sa.text("SELECT 1"))
        await conn.commit()
    raw.execute("SELECT 1").close()  # parked, still open
    await made.dispose()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        raw.execute("SELECT 1")
