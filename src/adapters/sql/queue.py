"""The embedded durable queue on the SQL store: one ``queue_messages`` table, a topic per queue."""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import connect, is_sqlite, store_name, translate_errors
from domain.ports import Queue, QueueMessage

DEFAULT_ACK_WAIT_SECONDS = 30.0
DEFAULT_DEDUPE_WINDOW_SECONDS = 120.0  # JetStream's default duplicate window
# A waiting pull looks at the table this often (jittered), for publishes from other
# processes; publishes in this process wake it at once.
MAX_POLL_SECONDS = 0.05
MIN_POLL_SECONDS = 0.02

_jitter = random.SystemRandom()
q = t.queue_messages.c


class _Signal:
    """Wakes the pulls of one engine and topic in this process when a message may be ready.

    ``version`` counts the wake-ups, so a pull that saw nothing can tell whether a publish
    slipped in between its look at the table and its wait. ``next_purge`` is when the
    topic's old tombstones are purged next (see ``_purge``).
    """

    def __init__(self) -> None:
        self.version = 0
        self.next_purge: datetime | None = None
        self._condition: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def condition(self) -> asyncio.Condition:
        # A condition belongs to one event loop; an engine may outlive a loop (tests).
        loop = asyncio.get_running_loop()
        if self._condition is None or self._loop is not loop:
            self._condition, self._loop = asyncio.Condition(), loop
        return self._condition

    async def notify(self) -> None:
        self.version += 1
        async with self.condition:
            self.condition.notify_all()

    async def wait(self, seen: int, seconds: float) -> None:
        condition = self.condition
        async with condition:
            if self.version != seen:
                return
            try:
                async with asyncio.timeout(seconds):
                    await condition.wait()
            except TimeoutError:
                pass


# Per engine (weakly, so a disposed and dropped engine takes its signals along) and topic.
_signals: weakref.WeakKeyDictionary[Engine, dict[str, _Signal]] = weakref.WeakKeyDictionary()


def _signal(engine: AsyncEngine, topic: str) -> _Signal:
    by_topic = _signals.setdefault(engine.sync_engine, {})
    return by_topic.setdefault(topic, _Signal())


def _now() -> datetime:
    return datetime.now(UTC)


class SqlDelivery:
    """One delivery; settling it after the message was handed out again does nothing.

    ``attempt`` is the fencing token: ack and nak change the row only while it is still
    delivered under this attempt.
    """

    def __init__(self, queue: SqlQueue, seq: int, message: QueueMessage, attempt: int) -> None:
        self.message = message
        self.attempt = attempt
        self._queue = queue
        self._seq = seq

    async def ack(self) -> None:
        await self._queue._settle(self._seq, self.attempt, acked=True, delay_seconds=0)

    async def nak(self, delay_seconds: float = 0) -> None:
        await self._queue._settle(self._seq, self.attempt, acked=False,
                                  delay_seconds=delay_seconds)


class SqlQueue:
    """The Queue port on SQLite or MySQL/MariaDB, durable across restarts.

    A pulled message is invisible until acked; a nak, or no ack within ``ack_wait_seconds``,
    makes it visible again and the next delivery counts one more attempt. Acked messages stay
    as tombstones for ``dedupe_window_seconds`` so a republished id is dropped, as JetStream
    does. Timing uses this host's wall clock.
    """

    def __init__(self, engine: AsyncEngine, topic: str, *,
                 ack_wait_seconds: float = DEFAULT_ACK_WAIT_SECONDS,
                 dedupe_window_seconds: float = DEFAULT_DEDUPE_WINDOW_SECONDS) -> None:
        if ack_wait_seconds <= 0:
            raise ValueError("ack_wait_seconds must be positive")
        if not topic:
            raise ValueError("a queue needs a topic")
        self.topic = topic
        self._engine = engine
        self._sqlite = is_sqlite(engine)
        self._store = store_name(engine.url)
        self._ack_wait = timedelta(seconds=ack_wait_seconds)
        self._dedupe_window = timedelta(seconds=dedupe_window_seconds)
        self._signal = _signal(engine, topic)

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        with translate_errors(self._store):
            # On SQLite a write takes the write lock at BEGIN, through this process's gate.
            async with connect(self._engine, write=write) as conn, conn.begin():
                yield conn

    async def publish(self, message: QueueMessage) -> None:
        now = _now()
        row = _row(self.topic, message, now)
        stmt: sa.Insert
        if self._sqlite:
            stmt = sqlite.insert(t.queue_messages).values(row).on_conflict_do_nothing()
        else:
            # A no-op update: the duplicate is dropped, any other error still raises.
            stmt = mysql.insert(t.queue_messages).values(row).on_duplicate_key_update(
                topic=q.topic)
        async with self._transaction(write=True) as conn:
            # An id acked longer ago than the dedupe window is free again.
            await conn.execute(sa.delete(t.queue_messages).where(
                q.topic == self.topic, q.id == message.id,
                q.acked_at < now - self._dedupe_window))
            await conn.execute(stmt)
            await _purge(self._signal, conn.execute, self.topic, now, self._dedupe_window)
        await self._signal.notify()

    async def pull(self, timeout_seconds: float) -> SqlDelivery | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_seconds, 0.0)
        # A pull that will not wait is asked when work is expected: no plain look first.
        look_first = timeout_seconds > 0
        while True:
            seen = self._signal.version
            delivery = await self._claim(look_first=look_first)
            if delivery is not None:
                return delivery
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            poll = _jitter.uniform(MIN_POLL_SECONDS, MAX_POLL_SECONDS)
            await self._signal.wait(seen, min(remaining, poll))

    async def depth(self) -> int:
        async with self._transaction(write=False) as conn:
            result = await conn.execute(sa.select(sa.func.count()).select_from(t.queue_messages)
                                        .where(q.topic == self.topic, q.acked_at.is_(None)))
            return int(result.scalar_one())

    def _ready(self, now: datetime) -> dict[str, object]:
        """The parameters of ``_READY`` and ``_TAKE_READY``."""
        return {"key_topic": self.topic, "key_now": now}

    async def _claim(self, *, look_first: bool) -> SqlDelivery | None:
        now = _now()
        if self._sqlite:
            if look_first:
                # A plain read first: an idle poll must not take SQLite's one write lock.
                async with self._transaction(write=False) as conn:
                    if (await conn.execute(_READY, self._ready(now))).first() is None:
                        return None
                now = _now()
            return await self._claim_sqlite(now)
        return await self._claim_mysql(now)

    async def _claim_sqlite(self, now: datetime) -> SqlDelivery | None:
        # One conditional UPDATE under the write lock: two pulls never take the same row.
        async with self._transaction(write=True) as conn:
            row = (await conn.execute(
                _TAKE_READY, {**self._ready(now), "until": now + self._ack_wait})).first()
        if row is None:
            return None
        return SqlDelivery(self, row.seq, QueueMessage(row.id, bytes(row.body)), row.attempt)

    async def _claim_mysql(self, now: datetime) -> SqlDelivery | None:
        async with self._transaction(write=True) as conn:
            # SKIP LOCKED: concurrent pulls pass over a row another pull is claiming.
            row = (await conn.execute(
                _READY.with_for_update(skip_locked=True), self._ready(now))).first()
            if row is None:
                return None
            attempt = row.attempt + 1
            await conn.execute(
                sa.update(t.queue_messages).where(q.seq == row.seq)
                .values(attempt=attempt, delivered=True, available_at=now + self._ack_wait))
        return SqlDelivery(self, row.seq, QueueMessage(row.id, bytes(row.body)), attempt)

    async def _settle(self, seq: int, attempt: int, *, acked: bool,
                      delay_seconds: float) -> None:
        now = _now()
        values: dict[str, object] = {"delivered": False, "key_seq": seq, "key_attempt": attempt}
        if acked:
            values["acked_at"] = now
        else:
            values["available_at"] = now + timedelta(seconds=max(delay_seconds, 0.0))
        async with self._transaction(write=True) as conn:
            result = await conn.execute(_SETTLE, values)
            if acked:
                # Acks purge too: messages enqueued in a unit of work never pass publish.
                await _purge(self._signal, conn.execute, self.topic, now, self._dedupe_window)
        if not acked and result.rowcount:
            await self._signal.notify()


def _row(topic: str, message: QueueMessage, now: datetime) -> dict[str, object]:
    return {"topic": topic, "id": message.id, "body": message.body, "created_at": now,
            "available_at": now, "delivered": False, "attempt": 0, "acked_at": None}


_INSERT = sa.insert(t.queue_messages)
# Statements built once, their values as parameters (cheaper than building each time).
_READY = (sa.select(q.seq, q.id, q.body, q.attempt)
          .where(q.topic == sa.bindparam("key_topic"), q.acked_at.is_(None),
                 q.available_at <= sa.bindparam("key_now"))
          .order_by(q.available_at, q.seq).limit(1))
_TAKE_READY = (sa.update(t.queue_messages)
               .where(q.seq == _READY.with_only_columns(q.seq).scalar_subquery())
               .values(attempt=q.attempt + 1, delivered=True, available_at=sa.bindparam("until"))
               .returning(q.seq, q.id, q.body, q.attempt))
# The values to set come with the keys: ``delivered`` and ``acked_at`` or ``available_at``.
_SETTLE = sa.update(t.queue_messages).where(
    q.seq == sa.bindparam("key_seq"), q.attempt == sa.bindparam("key_attempt"),
    q.delivered == sa.true(), q.acked_at.is_(None))


# Taken in a unit of work: acked at once, since the message leaves when the unit commits.
_TAKE_ACKED = (sa.update(t.queue_messages)
               .where(q.seq == _READY.with_only_columns(q.seq).scalar_subquery())
               .values(attempt=q.attempt + 1, delivered=False, acked_at=sa.bindparam("at"))
               .returning(q.seq, q.id, q.body))
_ACK = (sa.update(t.queue_messages).where(q.seq == sa.bindparam("key_seq"))
        .values(attempt=q.attempt + 1, delivered=False, acked_at=sa.bindparam("at")))
_PURGE = sa.delete(t.queue_messages).where(
    q.topic == sa.bindparam("key_topic"), q.acked_at < sa.bindparam("key_before"))

Execute = Callable[[sa.Executable, dict[str, object]], Awaitable[sa.CursorResult[Any]]]


async def _purge(signal: _Signal, execute: Execute, topic: str, now: datetime,
                 window: timedelta) -> None:
    """Drop the topic's tombstones older than the dedupe window, every half window."""
    if signal.next_purge is None or now >= signal.next_purge:
        signal.next_purge = now + window / 2
        await execute(_PURGE, {"key_topic": topic, "key_before": now - window})


async def take_message(engine: AsyncEngine, execute: Execute, topic: str) -> QueueMessage | None:
    """Take the next ready message of ``topic`` in the caller's transaction on ``engine``'s
    database, ``execute`` running its statements: it is acked when the transaction commits,
    and stays ready when it does not. Like acks, takes purge old tombstones now and then."""
    now = _now()
    ready = {"key_topic": topic, "key_now": now}
    if is_sqlite(engine):
        # One conditional UPDATE under the write lock the transaction holds.
        row = (await execute(_TAKE_ACKED, {**ready, "at": now})).first()
    else:
        # SKIP LOCKED: concurrent takes pass over a row another one is taking.
        row = (await execute(_READY.with_for_update(skip_locked=True), ready)).first()
        if row is not None:
            await execute(_ACK, {"key_seq": row.seq, "at": now})
    await _purge(_signal(engine, topic), execute, topic, now,
                 timedelta(seconds=DEFAULT_DEDUPE_WINDOW_SECONDS))
    return None if row is None else QueueMessage(row.id, bytes(row.body))


def enqueue_statement(topic: str, message: QueueMessage) -> tuple[sa.Insert, dict[str, object]]:
    """The insert (and its row) that puts ``message`` on the queue of ``topic``, for a caller's
    transaction on the queue's database; after the commit, ``enqueued`` wakes this process's
    pulls."""
    return _INSERT, _row(topic, message, _now())


async def enqueued(engine: AsyncEngine, topic: str) -> None:
    """Wake this process's pulls of ``topic`` on ``engine`` after ``enqueue_statement``."""
    await _signal(engine, topic).notify()


def sql_queue(engine: AsyncEngine, topic: str, *,
              ack_wait_seconds: float = DEFAULT_ACK_WAIT_SECONDS,
              dedupe_window_seconds: float = DEFAULT_DEDUPE_WINDOW_SECONDS) -> Queue:
    """A queue for ``topic`` on ``engine``'s database, typed as the port."""
    return SqlQueue(engine, topic, ack_wait_seconds=ack_wait_seconds,
                    dedupe_window_seconds=dedupe_window_seconds)
