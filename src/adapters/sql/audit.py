"""The audit log on SQL: one hash chain, appended under a lock on its single head row; and the
audit outbox that holds events for a separate audit store until they are forwarded there."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from adapters.sql import mapping as m
from adapters.sql import tables as t
from adapters.sql.engine import connect, store_name, translate_errors
from adapters.sql.mapping import MAX_PAGE, check_limit
from domain.audit import AuditEvent, chain
from domain.errors import Conflict, Unavailable
from domain.ports import AuditFilter, AuditLog, AuditOutbox, Page

HEAD_ID = 1
FORWARDER_ID = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BATCH = 500
_INSERT = sa.insert(t.audit_events)
# Statements built once: the values come as parameters (cheaper than building each time).
_HEAD = (sa.select(t.audit_chain_head.c.last_hash)
         .where(t.audit_chain_head.c.id == HEAD_ID).with_for_update())
_MOVE_HEAD = sa.update(t.audit_chain_head).where(t.audit_chain_head.c.id == HEAD_ID)

Execute = Any  # ``AsyncConnection.execute`` or a unit of work's ``execute``


async def append_on(execute: Execute, event: AuditEvent, store: str) -> AuditEvent:
    """Chain ``event`` to the head and store it, in the caller's open transaction.

    On MySQL the row lock on the head serialises appenders from every process until the
    transaction ends; on SQLite the transaction must have begun IMMEDIATE.
    """
    # The digest covers ``at`` as text, so fix it to the UTC form the store reads back.
    event = attrs.evolve(event, at=event.at.astimezone(UTC))
    row = (await execute(_HEAD)).first()
    if row is None:
        raise Unavailable(f"{store} has no audit chain head: run the migrations")
    linked = chain(event, row.last_hash)
    result = await execute(_INSERT, m.audit_row(linked))
    seq = result.inserted_primary_key[0] if result.inserted_primary_key else 0
    await execute(_MOVE_HEAD, {"last_hash": linked.hash, "last_seq": seq})
    return linked


class SqlAuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._store = store_name(engine.url)

    async def append(self, event: AuditEvent) -> AuditEvent:
        with translate_errors(self._store):
            # On SQLite the one writer (BEGIN IMMEDIATE, through this process's write gate)
            # holds the chain until commit.
            async with connect(self._engine, write=True) as conn:
                linked = await append_on(conn.execute, event, self._store)
                await conn.commit()
        return linked

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        return await _list(self._engine, t.audit_events, flt, limit, cursor)

    async def all(self) -> AsyncIterator[AuditEvent]:
        c = t.audit_events.c
        after = 0
        while True:
            with translate_errors(self._store):
                async with self._engine.connect() as conn:
                    rows = (await conn.execute(
                        sa.select(t.audit_events).where(c.seq > after).order_by(c.seq)
                        .limit(BATCH))).mappings().all()
            for r in rows:
                yield m.audit_of(r)
            if len(rows) < BATCH:
                return
            after = rows[-1]["seq"]


class SqlAuditOutbox:
    """``audit_outbox`` rows in ``seq`` order; ``audit_forwarder`` holds the forwarding lease."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._store = store_name(engine.url)

    async def claim(self, owner: str, now: datetime, until: datetime) -> bool:
        c = t.audit_forwarder.c
        # One conditional update: whoever matches the row holds the lease, whatever the races.
        stmt = (sa.update(t.audit_forwarder)
                .where(c.id == FORWARDER_ID, sa.or_(c.owner == owner, c.expires_at <= now))
                .values(owner=owner, expires_at=until))
        result = await self._write(stmt)
        return result.rowcount == 1

    async def release(self, owner: str) -> None:
        c = t.audit_forwarder.c
        await self._write(sa.update(t.audit_forwarder)
                          .where(c.id == FORWARDER_ID, c.owner == owner)
                          .values(owner="", expires_at=_EPOCH))

    async def pending(self, limit: int = 100) -> builtins.list[AuditEvent]:
        check_limit(limit)
        c = t.audit_outbox.c
        with translate_errors(self._store):
            async with self._engine.connect() as conn:
                rows = (await conn.execute(
                    sa.select(t.audit_outbox).order_by(c.seq).limit(limit))).mappings().all()
        return [_pending_of(r) for r in rows]

    async def remove(self, ids: Sequence[str]) -> None:
        wanted = builtins.list(dict.fromkeys(ids))
        for start in range(0, len(wanted), MAX_PAGE):
            await self._write(sa.delete(t.audit_outbox)
                              .where(t.audit_outbox.c.id.in_(wanted[start:start + MAX_PAGE])))

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        return await _list(self._engine, t.audit_outbox, flt, limit, cursor)

    async def _write(self, stmt: Executable) -> CursorResult[Any]:
        with translate_errors(self._store):
            async with connect(self._engine, write=True) as conn:
                result = await conn.execute(stmt)
                await conn.commit()
                return result


class SqlAuditChain:
    """A unit of work's recorder when the audit log is the SQL store's: the event is chained
    into ``audit_events`` in the unit's own transaction."""

    def __init__(self, execute: Execute, store: str) -> None:
        self._execute = execute
        self._store = store

    async def add(self, event: AuditEvent) -> None:
        await append_on(self._execute, event, self._store)


class SqlAuditOutboxWriter:
    """A unit of work's recorder when the audit log is a separate store: the event waits in
    ``audit_outbox``, committed with the change it records, for the forwarder."""

    def __init__(self, execute: Execute) -> None:
        self._execute = execute

    async def add(self, event: AuditEvent) -> None:
        row = m.audit_row(attrs.evolve(event, at=event.at.astimezone(UTC)))
        del row["previous_hash"], row["hash"]
        try:
            await self._execute(sa.insert(t.audit_outbox).values(row))
        except Conflict as exc:
            raise Conflict(f"audit event {event.id} already exists") from exc


async def _list(engine: AsyncEngine, table: sa.Table, flt: AuditFilter, limit: int,
                cursor: str | None) -> Page[AuditEvent]:
    check_limit(limit)
    c = table.c
    stmt = sa.select(table)
    for column, value in ((c.actor, flt.actor), (c.org_id, flt.org_id), (c.verb, flt.verb),
                          (c.resource_type, flt.resource_type)):
        if value is not None:
            stmt = stmt.where(column == value)
    if flt.outcome is not None:
        stmt = stmt.where(c.outcome == flt.outcome.value)
    if flt.since is not None:
        stmt = stmt.where(c.at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(c.at < flt.until)
    if cursor is not None:
        stmt = stmt.where(c.seq > _seq_of(cursor))
    stmt = stmt.order_by(c.seq).limit(limit + 1)
    with translate_errors(store_name(engine.url)):
        async with engine.connect() as conn:
            rows = builtins.list((await conn.execute(stmt)).mappings().all())
    more = len(rows) > limit
    rows = rows[:limit]
    read = m.audit_of if table is t.audit_events else _pending_of
    return Page(tuple(read(r) for r in rows),
                m.encode_cursor(rows[-1]["seq"]) if more else None)


def _pending_of(r: Any) -> AuditEvent:
    return m.audit_of({**r, "previous_hash": "", "hash": ""})


def _seq_of(cursor: str) -> int:
    (seq,) = m.decode_cursor(cursor, 1)
    if not isinstance(seq, int):
        raise m.bad_cursor()
    return seq


def audit_log(engine: AsyncEngine) -> AuditLog:
    return SqlAuditLog(engine)


def audit_outbox(engine: AsyncEngine) -> AuditOutbox:
    return SqlAuditOutbox(engine)
