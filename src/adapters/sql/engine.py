"""The async SQLAlchemy engine for SQLite and MySQL/MariaDB, and store-error translation."""

from __future__ import annotations

import asyncio
import ssl
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import attrs
from sqlalchemy import exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.sql import sqlite_driver
from domain.errors import Conflict, Invalid, Unavailable

# SQLite waits this long for another writer before reporting the store unavailable.
SQLITE_BUSY_TIMEOUT_MS = sqlite_driver.BUSY_TIMEOUT_MS
# Execution option naming the BEGIN statement SQLite uses (IMMEDIATE takes the write lock).
SQLITE_BEGIN = sqlite_driver.BEGIN_OPTION


def is_sqlite(engine_or_url: AsyncEngine | URL | str) -> bool:
    if isinstance(engine_or_url, AsyncEngine):
        return engine_or_url.dialect.name == "sqlite"
    return make_url(engine_or_url).get_backend_name() == "sqlite"


def store_name(url: URL | str) -> str:
    """How errors name the store: backend and location, never the password."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"SQLite database {u.database or ':memory:'}"
    return f"{u.get_backend_name()} database {u.host or 'localhost'}:{u.port or 3306}/{u.database}"


@attrs.frozen
class DatabaseOptions:
    """How to open a MySQL/MariaDB database: its connection pool, and TLS when ``tls`` is set.
    SQLite ignores them."""

    pool_size: int = 5
    max_overflow: int = 10
    tls: ssl.SSLContext | None = None


def create_engine(
    url: str | URL, options: DatabaseOptions | None = None, **kwargs: Any
) -> AsyncEngine:
    """An engine for ``sqlite:///path`` or ``mysql+asyncmy://…``; the caller disposes."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        # Statements in the event loop's thread, waits for locks on a thread (see
        # ``sqlite_driver``).
        return sqlite_driver.create_engine(u, **kwargs)
    if u.get_backend_name() in {"mysql", "mariadb"}:
        if "charset" not in u.query:
            u = u.update_query_dict({"charset": "utf8mb4"})
        # No gap locks: under REPEATABLE READ, transactions that update or delete rows that
        # are not there lock the gap between index entries, and two of them then inserting
        # into that gap deadlock each other (accounts signing up at once did).
        kwargs.setdefault("isolation_level", "READ COMMITTED")
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_recycle", 3600)
        if options is not None:
            kwargs.update(pool_size=options.pool_size, max_overflow=options.max_overflow)
            if options.tls is not None:
                kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "ssl": options.tls}
        return create_async_engine(u, **kwargs)
    raise Invalid(f"database-url: the scheme {u.drivername!r} is not supported: expected "
                  "sqlite:///PATH or mysql+asyncmy://USER:PASSWORD@HOST:PORT/DATABASE")


class WriteGate:
    """Serialises one process's SQLite write transactions on one engine.

    SQLite has one writer. Without the gate, this process's connections race for the write
    lock and the losers sleep in SQLite's busy handler (sleeps grow to 100 ms) even when the
    lock is free again a millisecond later; with it, they queue on an asyncio lock and start
    the moment it is released. Other processes still meet at the busy handler.
    """

    def __init__(self, store: str) -> None:
        self._store = store
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> asyncio.Lock:
        # A lock belongs to one event loop; an engine may outlive a loop (tests).
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self) -> asyncio.Lock:
        """Wait for the gate as long as SQLite would wait for its lock; return it, held."""
        lock = self._current()
        if not lock.locked() and not getattr(lock, "_waiters", None):
            # Free and nobody waiting: taken at once, without arming a timeout. (A lock just
            # released to a waiter that has not run yet is unlocked but not free: asyncio.Lock
            # keeps its waiters in ``_waiters``, None or empty when there are none.)
            await lock.acquire()
            return lock
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await lock.acquire()
        except TimeoutError:
            raise Unavailable(
                f"{self._store} is unavailable: another writer held it for "
                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:.0f} s"
            ) from None
        return lock


# Per engine, weakly, so a disposed and dropped engine takes its gate along.
_gates: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


def write_gate(engine: AsyncEngine) -> WriteGate | None:
    """The engine's gate on SQLite; None elsewhere (MySQL locks rows, not the database)."""
    if not is_sqlite(engine):
        return None
    gate = _gates.get(engine.sync_engine)
    if gate is None:
        gate = _gates[engine.sync_engine] = WriteGate(store_name(engine.url))
    return gate


@asynccontextmanager
async def connect(engine: AsyncEngine, *, write: bool) -> AsyncIterator[AsyncConnection]:
    """``engine.connect()``; for a write on SQLite, through the gate and with BEGIN IMMEDIATE.

    A writer that reads first must hold the write lock from the start: a deferred transaction
    that upgrades later fails with SQLITE_BUSY instead of waiting its turn.
    """
    gate = write_gate(engine) if write else None
    lock = await gate.acquire() if gate is not None else None
    try:
        async with engine.connect() as conn:
            if lock is not None:
                conn = await conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            yield conn
    finally:
        if lock is not None:
            lock.release()


class translate_errors:
    """Turn driver exceptions into domain errors naming ``store`` (a class rather than
    ``@contextmanager``: it wraps every statement, and a generator costs more to run)."""

    __slots__ = ("store",)

    def __init__(self, store: str) -> None:
        self.store = store

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(e, exc.IntegrityError):
            raise Conflict(
                f"{self.store}: the change conflicts with stored data ({_reason(e)})") from e
        if isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError,
                          exc.TimeoutError, OSError)):
            raise Unavailable(f"{self.store} is unavailable: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e)
    return text.splitlines()[0][:300] if text else type(e).__name__
