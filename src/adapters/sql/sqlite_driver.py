"""aiosqlite connections whose statements run in the event loop's thread, for SQLAlchemy.

SQLAlchemy's aiosqlite adapter makes four calls per statement (open a cursor, execute, fetch,
close), and aiosqlite runs each on the connection's own thread: a thread hand-off and an
event-loop wake-up each, about 0.2 ms of CPU per statement, ten times SQLite's own work for
a statement that finds a row by key. Here a statement is executed, fetched and closed in one
call, made right in the event loop's thread, and so are commits and rollbacks: SQLite answers
them in microseconds, and Opsicle's statements are bounded (pages, log reads of at most
``limit`` bytes).

Two things must never make the event loop wait, and go to the connection's thread instead:

* another process's lock. Connections have no busy timeout, so a statement that meets a lock
  fails at once with SQLITE_BUSY, having changed nothing; it is then run again on the thread
  with the busy timeout, where SQLite's busy handler waits for the lock as it would have
  without this module;
* checkpoints, which copy the write-ahead log into the database file and sync it to disk
  (milliseconds to tens of them). SQLite's own, run by the commit that fills the log, are
  off (``wal_autocheckpoint=0``); every ``CHECKPOINT_EVERY`` commits to a database, the
  committing connection runs a passive one on its thread.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

_Outcome = tuple[Any, int, int | None, list[Any]]
T = TypeVar("T")
# How long a statement that meets another connection's lock waits for it (on the thread).
BUSY_TIMEOUT_MS = 10_000
# Commits to one database between two checkpoints of its write-ahead log.
CHECKPOINT_EVERY = 200
_commits: dict[str, int] = {}


class OneTripCursor:
    """A cursor whose ``execute`` runs, fetches and closes the statement in one trip."""

    arraysize = 1

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        db = self._connection.sqlite

        def run() -> _Outcome:
            cursor = db.cursor()
            try:
                if parameters is None:
                    cursor.execute(sql)
                else:
                    cursor.execute(sql, parameters)
                # Rows first: with RETURNING, the row count is known once they are all read.
                rows = cursor.fetchall() if cursor.description else []
                return cursor.description, cursor.rowcount, cursor.lastrowid, rows
            finally:
                cursor.close()

        self._take(await self._connection.trip(run))
        return self

    async def executemany(self, sql: str, seq_of_parameters: Sequence[Any]) -> OneTripCursor:
        db = self._connection.sqlite

        def run() -> _Outcome:
            cursor = db.cursor()
            try:
                cursor.executemany(sql, seq_of_parameters)
                return cursor.description, cursor.rowcount, cursor.lastrowid, []
            finally:
                cursor.close()

        self._take(await self._connection.trip(run))
        return self

    def _take(self, outcome: _Outcome) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    async def close(self) -> None:
        self._rows = []


class OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection with ``OneTripCursor`` cursors, its statements, commits and
    rollbacks made in the event loop's thread (see the module)."""

    database = ""

    @property
    def sqlite(self) -> sqlite3.Connection:
        return self._conn

    async def trip(self, work: Callable[[], T]) -> T:
        """Run ``work`` here; should another connection hold the lock it needs, wait for it
        on the connection's thread."""
        try:
            return work()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        return cast(T, await self._execute(self._waiting, work))  # type: ignore[no-untyped-call]

    def _waiting(self, work: Callable[[], T]) -> T:
        self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            return work()
        finally:
            self._conn.execute("PRAGMA busy_timeout=0")

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    async def _connect(self) -> OneTripConnection:
        try:
            await super()._connect()
        except BaseException:
            # aiosqlite stops the thread of a connection that failed to open without waiting
            # for it: should the event loop close first (a command ending on this very
            # error), the thread answers a closed loop and prints a traceback.
            await asyncio.to_thread(self._thread.join)
            raise
        return self

    async def commit(self) -> None:
        if not self._conn.in_transaction:
            return
        await self.trip(self._conn.commit)
        done = _commits.get(self.database, 0) + 1
        _commits[self.database] = done % CHECKPOINT_EVERY
        if done >= CHECKPOINT_EVERY:
            await self._execute(self._checkpoint)  # type: ignore[no-untyped-call]

    def _checkpoint(self) -> None:
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").close()

    async def rollback(self) -> None:
        # Nothing to do when no transaction is open, as after every commit (the pool's reset
        # on return rolls back too).
        if self._conn.in_transaction:
            await self.trip(self._conn.rollback)


def connect(database: str | bytes | Path, *, iter_chunk_size: int = 64, **kwargs: Any
            ) -> OneTripConnection:
    """``aiosqlite.connect`` making a ``OneTripConnection``."""

    def connector() -> sqlite3.Connection:
        location = os.fsdecode(database)
        # Used from the event loop's thread and the connection's own, one at a time: every
        # trip to the thread is awaited.
        # No busy timeout: a statement meeting a lock must fail at once (see ``trip``).
        db: sqlite3.Connection = sqlite3.connect(
            location, **{**kwargs, "check_same_thread": False, "timeout": 0})
        db.execute("PRAGMA wal_autocheckpoint=0").close()
        return db

    connection = OneTripConnection(connector, iter_chunk_size)
    connection.database = os.fsdecode(database)
    return connection


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI for ``create_async_engine(..., module=…)``: SQLAlchemy's aiosqlite adapter
    over this module's connections."""
    driver = types.SimpleNamespace(**vars(aiosqlite))
    driver.connect = connect
    driver.Connection = OneTripConnection
    return AsyncAdapt_aiosqlite_dbapi(driver, sqlite3)  # type: ignore[arg-type]
