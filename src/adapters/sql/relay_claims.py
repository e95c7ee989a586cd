"""Relay claims on the SQL store: one row per (approval, channel), taken by conditional update."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import connect, store_name, translate_errors
from domain.approvals import ApprovalStatus, ChatClaim
from domain.ports import RelayClaims


class SqlRelayClaims:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._store = store_name(engine.url)

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        with translate_errors(self._store):
            # On SQLite: BEGIN IMMEDIATE, through this process's write gate.
            async with connect(self._engine, write=True) as conn:
                yield conn

    async def claim(
        self, approval_id: str, channel: str, owner: str, *, now: datetime, until: datetime
    ) -> ChatClaim | None:
        c = t.relay_claims.c
        key = (c.approval_id == approval_id) & (c.channel == channel)
        # Renewed by its owner or taken over once expired; the fence goes first because
        # MySQL evaluates SET left to right and would otherwise see the new owner.
        taken = (
            sa.update(t.relay_claims)
            .where(key, (c.owner == owner) | (c.until <= now))
            .ordered_values(
                (c.fence, sa.case((c.owner == owner, c.fence), else_=c.fence + 1)),
                (c.owner, owner),
                (c.until, until),
            )
        )
        # Each step is a transaction of its own statement: an insert racing an update in one
        # transaction deadlocks on InnoDB's gap locks.
        for _ in range(3):
            async with self._connect() as conn:
                try:
                    await conn.execute(sa.insert(t.relay_claims).values(
                        approval_id=approval_id, channel=channel, owner=owner, until=until,
                        fence=1))
                    await conn.commit()
                    return ChatClaim(approval_id, channel, owner, until)
                except sa.exc.IntegrityError:
                    await conn.rollback()  # held, by this owner or another
            async with self._connect() as conn:
                if (await conn.execute(taken)).rowcount == 1:
                    row = (await conn.execute(sa.select(c.fence).where(key))).one()
                    await conn.commit()
                    return ChatClaim(approval_id, channel, owner, until, int(row.fence))
                gone = (await conn.execute(sa.select(c.owner).where(key))).first() is None
                await conn.commit()
            if not gone:
                return None  # another owner's, and not expired
        return None

    async def release(self, approval_id: str, channel: str, owner: str) -> None:
        c = t.relay_claims.c
        async with self._connect() as conn:
            await conn.execute(sa.delete(t.relay_claims).where(
                c.approval_id == approval_id, c.channel == channel, c.owner == owner))
            await conn.commit()

    async def purge(self, ended_before: datetime, limit: int = 500) -> int:
        c, a = t.relay_claims.c, t.approvals.c
        pending = sa.exists().where(a.id == c.approval_id,
                                    a.status == ApprovalStatus.PENDING.value)
        stale = (c.until < ended_before, ~pending)
        async with self._connect() as conn:
            # Keys first: SQLite has no DELETE … LIMIT.
            keys = [tuple(r) for r in await conn.execute(
                sa.select(c.approval_id, c.channel).where(*stale).limit(limit))]
            purged = 0
            if keys:
                purged = (await conn.execute(sa.delete(t.relay_claims).where(
                    sa.tuple_(c.approval_id, c.channel).in_(keys), *stale))).rowcount
            await conn.commit()
        return int(purged)


def sql_relay_claims(engine: AsyncEngine) -> RelayClaims:
    return SqlRelayClaims(engine)


