"""aiosqlite connections that make one trip to their thread per statement, for SQLAlchemy.

aiosqlite runs each call on the connection's own thread; SQLAlchemy's adapter makes four
calls per statement (open a cursor, execute, fetch, close), each a thread hand-off and an
event-loop wake-up. Here a statement is executed, fetched and closed in one call: the same
SQLite work on the same thread (so SQLite's busy handler still waits there, never in the
event loop), a quarter of the hand-offs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

_Outcome = tuple[Any, int, int | None, list[Any]]


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
    """aiosqlite's connection with ``OneTripCursor`` cursors (everything else unchanged)."""

    @property
    def sqlite(self) -> sqlite3.Connection:
        return self._conn

    async def trip(self, work: Callable[[], _Outcome]) -> _Outcome:
        """Run ``work`` on the connection's thread."""
        return cast(_Outcome, await self._execute(work))  # type: ignore[no-untyped-call]

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

    async def rollback(self) -> None:
        # No trip when no transaction is open, as after every commit (the pool's reset on
        # return rolls back too). Every trip is awaited, so none is running meanwhile.
        if self._conn.in_transaction:
            await super().rollback()


def connect(database: str | bytes | Path, *, iter_chunk_size: int = 64, **kwargs: Any
            ) -> OneTripConnection:
    """``aiosqlite.connect`` making a ``OneTripConnection``."""

    def connector() -> sqlite3.Connection:
        location = database.decode("utf-8") if isinstance(database, bytes) else str(database)
        # Used on the connection's own thread only; ``rollback`` reads whether a transaction
        # is open from the event loop's thread while no trip runs.
        db: sqlite3.Connection = sqlite3.connect(location, **{**kwargs, "check_same_thread": False})
        return db

    return OneTripConnection(connector, iter_chunk_size)


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI for ``create_async_engine(..., module=…)``: SQLAlchemy's aiosqlite adapter
    over this module's connections."""
    driver = types.SimpleNamespace(**vars(aiosqlite))
    driver.connect = connect
    driver.Connection = OneTripConnection
    return AsyncAdapt_aiosqlite_dbapi(driver, sqlite3)  # type: ignore[arg-type]
