"""The audit log on SQL: one hash chain, appended under a lock on its single head row."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from datetime import UTC

import attrs
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql import mapping as m
from adapters.sql import tables as t
from adapters.sql.engine import SQLITE_BEGIN, is_sqlite, store_name, translate_errors
from adapters.sql.repositories import check_limit
from domain.audit import AuditEvent, chain
from domain.errors import Unavailable
from domain.ports import AuditFilter, AuditLog, Page

HEAD_ID = 1
BATCH = 500


class SqlAuditLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._store = store_name(engine.url)

    async def append(self, event: AuditEvent) -> AuditEvent:
        # The digest covers ``at`` as text, so fix it to the UTC form the store reads back.
        event = attrs.evolve(event, at=event.at.astimezone(UTC))
        head = t.audit_chain_head.c
        with translate_errors(self._store):
            async with self._engine.connect() as conn:
                if is_sqlite(self._engine):
                    # BEGIN IMMEDIATE: the one SQLite writer holds the chain until commit.
                    conn = await conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                # On MySQL the row lock on the head serialises appenders from every process.
                row = (await conn.execute(
                    sa.select(head.last_hash).where(head.id == HEAD_ID).with_for_update()
                )).first()
                if row is None:
                    raise Unavailable(f"{self._store} has no audit chain head: run the migrations")
                linked = chain(event, row.last_hash)
                result = await conn.execute(sa.insert(t.audit_events).values(m.audit_row(linked)))
                seq = result.inserted_primary_key[0] if result.inserted_primary_key else 0
                await conn.execute(sa.update(t.audit_chain_head).where(head.id == HEAD_ID)
                                   .values(last_hash=linked.hash, last_seq=seq))
                await conn.commit()
        return linked

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        check_limit(limit)
        c = t.audit_events.c
        stmt = sa.select(t.audit_events)
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
        with translate_errors(self._store):
            async with self._engine.connect() as conn:
                rows = builtins.list((await conn.execute(stmt)).mappings().all())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(tuple(m.audit_of(r) for r in rows),
                    m.encode_cursor(rows[-1]["seq"]) if more else None)

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


def _seq_of(cursor: str) -> int:
    (seq,) = m.decode_cursor(cursor, 1)
    if not isinstance(seq, int):
        raise m.bad_cursor()
    return seq


def audit_log(engine: AsyncEngine) -> AuditLog:
    return SqlAuditLog(engine)
