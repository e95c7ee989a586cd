"""SQLite for the async code: SQLAlchemy's synchronous pysqlite engine, called in the event
loop's thread.

SQLite answers Opsicle's statements in microseconds (rows by key, pages, log reads of at
most ``limit`` bytes). An async driver hands each statement to a thread and back, and
SQLAlchemy's asyncio layer runs every call in a greenlet of its own: together about 90 µs of
CPU per statement, more than SQLAlchemy's own work and ten times SQLite's. ``InlineEngine``,
``InlineConnection`` and ``InlineTransaction`` are SQLAlchemy's ``AsyncEngine``,
``AsyncConnection`` and ``AsyncTransaction`` whose calls run the synchronous engine directly.

Two things must never make the event loop wait, and go to a thread instead:

* another process's lock. Connections have no busy timeout, so a statement that meets a lock
  fails at once with SQLITE_BUSY, having changed nothing; it is then run again on a thread
  with the busy timeout, where SQLite's busy handler waits for the lock as it would have
  without this module. A commit is made on the driver's connection first, where it can be
  run again the same way, and only then on SQLAlchemy's, which then has nothing left to do;
* checkpoints, which copy the write-ahead log into the database file and sync it to disk
  (milliseconds to tens of them). SQLite's own, run by the commit that fills the log, are
  off (``wal_autocheckpoint=0``); every ``CHECKPOINT_EVERY`` commits that changed rows in a
  database, the committing connection runs a passive one on a thread.

Statements skip most of SQLAlchemy's execution machinery (``fast_statement``): an execution
context, events and a cursor result built for every call cost about 100 µs of CPU per
statement, where SQLite answers Opsicle's in 10 to 25 µs. The compiled form still comes from
SQLAlchemy's statement cache, parameters and rows still go through the column types, and the
transaction still begins as SQLAlchemy begins it; statements that need more go the usual way.

New connections are opened on a thread (a new database's journal becomes a write-ahead log
under its lock), and so is ``run_sync`` (migrations, schema probes), with the busy timeout.
Whatever runs on a thread is waited for even when its caller is cancelled: the thread holds
the connection until it is done.

Transactions are begun by the dialect with ``BEGIN <mode>``, the mode taken from the
connection's execution option ``BEGIN_OPTION`` (IMMEDIATE takes the write lock at once):
a writer that reads first must hold the lock from the start, as a deferred transaction
that upgrades later fails with SQLITE_BUSY instead of waiting its turn. Begun there (not in
a ``begin`` event), a BEGIN that fails leaves the connection as it was, to be tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Connection, Engine, Transaction
from sqlalchemy.engine.interfaces import CoreExecuteOptionsParameter, Dialect
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction
from sqlalchemy.pool import PoolProxiedConnection, StaticPool
from sqlalchemy.sql import compiler

T = TypeVar("T")
log = logging.getLogger("opsicle.sqlite")
# How long a statement that meets another connection's lock waits for it (on a thread).
BUSY_TIMEOUT_MS = 10_000
# How often a new connection tries again to turn a busy new database's journal into a WAL.
WAL_RETRY_SECONDS = 0.01
# Commits to one database between two checkpoints of its write-ahead log.
CHECKPOINT_EVERY = 200
# Connections kept open per engine; more are opened when needed (a full pool must never
# block: its wait would stop the event loop) and closed when given back.
POOL_SIZE = 20
_commits: dict[str, int] = {}
# Execution option naming the BEGIN statement's mode: DEFERRED (the default) or IMMEDIATE.
BEGIN_OPTION = "opsicle_sqlite_begin"
DRIVER_NAME = "opsicle_inline"


class Driver(sqlite3.Connection):
    """The driver's connection, told how its next transaction begins; ``committed`` is its
    ``total_changes`` at its last commit (a commit that wrote nothing needs no checkpoint)."""

    begin_mode = "DEFERRED"
    committed = 0


class InlineDialect(SQLiteDialect_pysqlite):
    """pysqlite's dialect, beginning transactions itself (see the module)."""

    supports_statement_cache = True

    def do_begin(self, dbapi_connection: Any) -> None:
        raw = dbapi_connection.dbapi_connection
        raw.execute(f"BEGIN {raw.begin_mode}").close()


registry.register(f"sqlite.{DRIVER_NAME}", __name__, "InlineDialect")


def busy(error: BaseException) -> bool:
    """Whether ``error`` is SQLite's SQLITE_BUSY: another connection holds a lock."""
    orig = error.orig if isinstance(error, exc.DBAPIError) else error
    return (isinstance(orig, sqlite3.OperationalError)
            and orig.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY)


def waiting(driver: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Run ``work`` letting SQLite wait for locks (the caller is on a thread)."""
    driver.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}").close()
    try:
        return work()
    finally:
        driver.execute("PRAGMA busy_timeout=0").close()


async def on_thread(work: Callable[[], T], undo: Callable[[T], object] | None = None) -> T:
    """``work`` on a thread. Cancelled meanwhile, it still waits for the thread to finish
    (the thread is using a connection nobody else may touch until then), undoes what it
    made with ``undo``, and is cancelled then."""
    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None and undo is not None:
            undo(task.result())
        raise


async def _run(raw: Driver, work: Callable[[], T]) -> T:
    """Run ``work`` here; should another connection hold the lock it needs, wait for it on
    a thread, with the busy timeout set on ``raw``, the connection it uses. A statement that
    failed on a lock changed nothing: it is run again only if its transaction is as it was."""
    began = raw.in_transaction
    try:
        return work()
    except (exc.OperationalError, sqlite3.OperationalError) as e:
        if not busy(e) or raw.in_transaction != began:
            raise
    return await on_thread(lambda: waiting(raw, work))


class Rows(IteratorResult[Any]):
    """A statement's rows, read in full, with the cursor's ``rowcount`` and an insert's
    ``inserted_primary_key``: what the adapters use of a ``CursorResult`` (``first``, ``one``,
    ``all``, ``scalar``, ``mappings`` and the rest of ``Result``, with SQLAlchemy's own rows)."""

    def __init__(self, metadata: SimpleResultMetaData, rows: list[Any], rowcount: int,
                 inserted_primary_key: Any = None) -> None:
        super().__init__(metadata, iter(rows))
        self.rowcount = rowcount
        self.inserted_primary_key = inserted_primary_key
        if metadata is _NO_ROWS:
            # As a CursorResult: asking for the rows of a statement that returns none fails.
            self._soft_close(hard=True)


class _Plan:
    """How to run one compiled statement: its SQL, its parameters in order with their
    types' bind processors, and (for a statement that returns rows) its columns."""

    __slots__ = ("binds", "columns", "sql")

    def __init__(self, compiled: compiler.SQLCompiler, dialect: Dialect) -> None:
        self.sql = compiled.string
        processors = compiled._bind_processors
        self.binds: list[tuple[str, Callable[[Any], Any] | None]] = [
            (key, cast("Callable[[Any], Any] | None", processors.get(key)))
            for key in compiled.positiontup or ()]
        self.columns: SimpleResultMetaData | None = None
        entries = compiled._result_columns
        if entries:
            keys = [entry.keyname for entry in entries]
            self.columns = SimpleResultMetaData(
                keys,
                extra=[entry.objects for entry in entries],
                _processors=[entry.type._cached_result_processor(dialect, None)
                             for entry in entries],
                _ambiguous_keys=frozenset(k for k in keys if keys.count(k) > 1),
            )


def _plan_of(compiled: compiler.SQLCompiler, dialect: Dialect) -> _Plan | None:
    plan = _plans.get(compiled, _UNPLANNED)
    if plan is _UNPLANNED:
        usual = (not compiled.positional or compiled.literal_execute_params
                 or compiled.post_compile_params or compiled.insert_prefetch
                 or compiled.update_prefetch or compiled.implicit_returning
                 or compiled.schema_translate_map or compiled.isplaintext
                 or compiled._textual_ordered_columns or compiled._ad_hoc_textual
                 or compiled._loose_column_name_matching
                 or (compiled._result_columns and not compiled._ordered_columns))
        plan = None if usual else _Plan(compiled, dialect)
        _plans[compiled] = plan
    return cast("_Plan | None", plan)


def _parked(engine: Engine) -> list[Connection]:
    """The engine's connections closed by their users but not given back to the pool: taking
    one again costs less than SQLAlchemy's checkout (events, a new ``Connection``, a reset at
    checkin). Like any connection checked out of the pool they stay open, and keep the engine
    alive, until the engine is disposed of (``InlineEngine.dispose`` closes them)."""
    parked: list[Connection] = vars(engine).setdefault("_opsicle_parked", [])
    return parked


_UNPLANNED = object()
# Per statement and its parameters' names: its compiled form, plan, and the values written
# into it, found again without building SQLAlchemy's cache key (a statement never changes).
_known: weakref.WeakKeyDictionary[sa.Executable, dict[tuple[str, ...], tuple[
    compiler.SQLCompiler, _Plan | None, Any, Any]]] = weakref.WeakKeyDictionary()
_plans: weakref.WeakKeyDictionary[compiler.SQLCompiler, object] = weakref.WeakKeyDictionary()
_NO_ROWS = SimpleResultMetaData([])
_FAST_TYPES = (sa.Select, sa.CompoundSelect, sa.Insert, sa.Update, sa.Delete)
# Connection execution options the fast path honours (the first applies at BEGIN).
_FAST_OPTIONS = frozenset({BEGIN_OPTION})


def fast_statement(conn: Connection, statement: sa.Executable, parameters: Any,
                   execution_options: CoreExecuteOptionsParameter | None
                   ) -> Callable[[], Rows] | None:
    """``conn.execute(statement, parameters)`` as a call that needs less of SQLAlchemy (see
    the module), or None when the statement needs the usual way: several parameter sets,
    expanding or literal-execute parameters, execution options, Python-side defaults,
    implicit RETURNING, textual SQL, a savepoint, a failed transaction, echo."""
    if (execution_options or not isinstance(statement, _FAST_TYPES)
            or statement._execution_options or conn._echo
            or not (parameters is None or isinstance(parameters, Mapping))
            or not _FAST_OPTIONS.issuperset(conn._execution_options)
            or conn._nested_transaction is not None or conn._dbapi_connection is None):
        return None
    began = conn._transaction
    if began is not None and not began.is_active:
        return None
    dialect = conn.dialect
    keys = tuple(sorted(parameters)) if parameters else ()
    known = _known.get(statement)
    if known is None:
        known = _known[statement] = {}
    entry = known.get(keys)
    if entry is None or entry[0].dialect is not dialect:
        compiled, extracted, collected, _ = statement._compile_w_cache(
            dialect=dialect, compiled_cache=conn.engine._compiled_cache, column_keys=list(keys),
            for_executemany=False, schema_translate_map=None,
            linting=dialect.compiler_linting | compiler.WARN_LINTING)
        assert isinstance(compiled, compiler.SQLCompiler)
        entry = known[keys] = (compiled, _plan_of(compiled, dialect), extracted, collected)
    compiled, plan, extracted, collected = entry
    if plan is None:
        return None
    values: Mapping[str, Any] | None = parameters
    if values is None or not all(key in values for key, _ in plan.binds):
        # Values written into the statement itself (``column == value``), or defaults.
        values = compiled.construct_params(
            parameters, extracted_parameters=extracted, escape_names=False,
            _collected_params=collected)
        assert values is not None
    bound = [values[key] if bind is None else bind(values[key]) for key, bind in plan.binds]
    # As SQLAlchemy: an insert's primary key from its parameters and SQLite's last row id.
    inserted = compiled._inserted_primary_key_from_lastrowid_getter if compiled.isinsert else None

    def run() -> Rows:
        if conn._transaction is None:
            conn._autobegin()
        sql, args = plan.sql, bound
        raw = _driver(conn)
        cursor = raw.cursor()
        try:
            for listener in conn.dispatch.before_cursor_execute:
                sql, args = listener(conn, cursor, sql, args, None, False)
            try:
                cursor.execute(sql, args)
                rows = cursor.fetchall() if plan.columns is not None else []
            except sqlite3.Error as e:
                raise exc.DBAPIError.instance(sql, args, e, sqlite3.Error) from e
            for listener in conn.dispatch.after_cursor_execute:
                listener(conn, cursor, sql, args, None, False)
            key = None
            if inserted is not None:
                key = inserted(cursor.lastrowid if compiled.postfetch_lastrowid else None, values)
            return Rows(plan.columns or _NO_ROWS, rows, cursor.rowcount, key)
        finally:
            cursor.close()

    return run


def _driver(conn: Connection) -> Driver:
    raw = conn.connection.dbapi_connection
    assert isinstance(raw, Driver)
    return raw


async def _commit(conn: Connection) -> None:
    """Commit on the driver's connection (see the module), then checkpoint when it is time.
    The driver's errors come as SQLAlchemy's, as from any statement."""
    raw = _driver(conn)
    if not raw.in_transaction:
        return
    try:
        await _run(raw, raw.commit)
    except sqlite3.Error as e:
        raise exc.DBAPIError.instance("COMMIT", None, e, sqlite3.Error) from e
    wrote, raw.committed = raw.total_changes != raw.committed, raw.total_changes
    if not wrote:
        return
    database = conn.engine.url.database or ""
    done = _commits.get(database, 0) + 1
    _commits[database] = done % CHECKPOINT_EVERY
    if done >= CHECKPOINT_EVERY:
        await on_thread(lambda: _checkpoint(raw, database))


def _checkpoint(raw: sqlite3.Connection, database: str) -> None:
    # The commit is done: a checkpoint that fails is tried again at the next one.
    try:
        raw.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
    except sqlite3.Error as e:
        log.warning("SQLite database %s: checkpoint of the write-ahead log failed: %s",
                    database, e)


class InlineTransaction(AsyncTransaction):
    """An ``AsyncTransaction`` run in the event loop's thread (see the module)."""

    async def start(self, is_ctxmanager: bool = False) -> InlineTransaction:
        conn = self.connection._proxied
        begin = conn.begin_nested if self.nested else conn.begin
        began: Transaction = await _run(_driver(conn), begin)
        self.sync_transaction = self._assign_proxied(began)
        if is_ctxmanager:
            began.__enter__()
        return self

    async def commit(self) -> None:
        if not self.nested:
            await _commit(self.connection._proxied)
        self._proxied.commit()

    async def rollback(self) -> None:
        self._proxied.rollback()

    async def close(self) -> None:
        self._proxied.close()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        if type_ is None and not self.nested and self._proxied.is_active:
            try:
                await _commit(self.connection._proxied)
            except BaseException as e:
                # Rolled back, as when the block itself raised.
                self._proxied.__exit__(type(e), e, e.__traceback__)
                raise
        self._proxied.__exit__(type_, value, traceback)


class InlineConnection(AsyncConnection):
    """An ``AsyncConnection`` run in the event loop's thread (see the module)."""

    @classmethod
    def _regenerate_proxy_for_target(cls, target: Connection, **additional_kw: Any
                                     ) -> InlineConnection:
        return InlineConnection(InlineEngine._retrieve_proxy_for_target(target.engine), target)

    async def start(self, is_ctxmanager: bool = False) -> InlineConnection:
        if self.sync_connection:
            raise exc.InvalidRequestError("connection is already started")
        engine = self.sync_engine
        parked = _parked(engine)
        if parked:
            self.sync_connection = self._assign_proxied(parked.pop())
            return self
        idle = getattr(engine.pool, "checkedin", None)
        if idle is None or idle() > 0:
            conn = engine.connect()
        else:
            # A new connection: opening the file, and for a new database turning its journal
            # into a write-ahead log, which waits for the database's lock.
            conn = await on_thread(engine.connect, lambda made: made.close())
        self.sync_connection = self._assign_proxied(conn)
        return self

    async def get_raw_connection(self) -> PoolProxiedConnection:
        return self._proxied.connection

    def begin(self) -> InlineTransaction:
        return InlineTransaction(self)

    def begin_nested(self) -> InlineTransaction:
        return InlineTransaction(self, nested=True)

    async def execution_options(self, **opt: Any) -> InlineConnection:
        self._proxied.execution_options(**opt)
        return self

    async def commit(self) -> None:
        await _commit(self._proxied)
        self._proxied.commit()

    async def rollback(self) -> None:
        self._proxied.rollback()

    async def close(self) -> None:
        conn = self._proxied
        parked = _parked(conn.engine)
        if (len(parked) < POOL_SIZE and not conn.invalidated and not conn.in_transaction()
                and not _driver(conn).in_transaction):
            # Kept for the next ``start``, with the engine's execution options again.
            conn._execution_options = conn.engine._execution_options
            parked.append(conn)
            self.sync_connection = None
            return
        conn.close()

    async def execute(
        self,
        statement: sa.Executable,
        parameters: Any = None,
        *,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> sa.CursorResult[Any]:
        conn = self._proxied
        fast = fast_statement(conn, statement, parameters, execution_options)
        if fast is not None:
            # A ``Result`` with ``rowcount``, all of a ``CursorResult`` that callers use.
            return cast("sa.CursorResult[Any]", await _run(_driver(conn), fast))
        return await _run(_driver(conn), lambda: conn.execute(
            statement, parameters, execution_options=execution_options))

    async def exec_driver_sql(
        self,
        statement: str,
        parameters: Any = None,
        execution_options: CoreExecuteOptionsParameter | None = None,
    ) -> sa.CursorResult[Any]:
        conn = self._proxied
        return await _run(_driver(conn), lambda: conn.exec_driver_sql(
            statement, parameters, execution_options=execution_options))

    async def run_sync(self, fn: Callable[..., T], *arg: Any, **kw: Any) -> T:
        conn = self._proxied
        raw = _driver(conn)
        return await on_thread(lambda: waiting(raw, lambda: fn(conn, *arg, **kw)))


class InlineEngine(AsyncEngine):
    """An ``AsyncEngine`` over SQLAlchemy's synchronous SQLite engine (see the module)."""

    def __init__(self, sync_engine: Engine) -> None:
        # AsyncEngine's own refuses a synchronous driver.
        self.sync_engine = self._assign_proxied(sync_engine)

    @classmethod
    def _regenerate_proxy_for_target(cls, target: Engine, **additional_kw: Any) -> InlineEngine:
        return InlineEngine(target)

    def connect(self) -> InlineConnection:
        return InlineConnection(self)

    async def raw_connection(self) -> PoolProxiedConnection:
        return self.sync_engine.raw_connection()

    async def dispose(self, close: bool = True) -> None:
        parked = _parked(self.sync_engine)
        while parked:
            parked.pop().close()
        # Closing a database's last connection checkpoints its write-ahead log.
        await on_thread(lambda: self.sync_engine.dispose(close=close))


def create_engine(url: URL, **kwargs: Any) -> InlineEngine:
    """An engine for the SQLite database of ``url`` (whatever its driver name); the caller
    disposes of it."""
    connect_args = {**kwargs.pop("connect_args", {}), "check_same_thread": False, "timeout": 0,
                    "factory": Driver}
    if url.database in (None, "", ":memory:"):
        kwargs.setdefault("poolclass", StaticPool)
    else:
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", -1)
        # The connection given back last is taken first: its page cache is the one most
        # likely still valid (a connection rereads the pages other connections wrote since
        # its last transaction: in turn through the whole pool, a statement cost twice as much).
        kwargs.setdefault("pool_use_lifo", True)
    sync = sa.create_engine(url.set(drivername=f"sqlite+{DRIVER_NAME}"),
                            connect_args=connect_args, **kwargs)
    event.listen(sync, "connect", _set_up)
    event.listen(sync, "begin", _begin_mode)
    return InlineEngine(sync)


def _set_up(raw: Driver, _record: Any) -> None:
    # The driver begins no transaction of its own: the dialect does (see the module).
    raw.isolation_level = None
    _write_ahead_log(raw)
    raw.execute("PRAGMA wal_autocheckpoint=0").close()
    raw.execute("PRAGMA foreign_keys=ON").close()
    raw.execute("PRAGMA synchronous=NORMAL").close()


def _write_ahead_log(raw: Driver) -> None:
    """Turn the database's journal into a write-ahead log (a no-op once it is one), waiting
    for its lock as long as a statement would: while another connection holds the lock of a
    database that is not in WAL mode yet (a new one, opened by several at once), SQLite
    answers SQLITE_BUSY at once rather than after the busy timeout. New connections are
    opened on a thread (see ``InlineConnection.start``), so the waits here block no loop."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000

    def switch() -> None:
        while True:
            try:
                raw.execute("PRAGMA journal_mode=WAL").close()
                return
            except sqlite3.OperationalError as e:
                if not busy(e) or time.monotonic() >= deadline:
                    raise
            time.sleep(WAL_RETRY_SECONDS)

    waiting(raw, switch)


def _begin_mode(conn: Connection) -> None:
    _driver(conn).begin_mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
