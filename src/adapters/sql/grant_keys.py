"""The approver's grant key ring on the SQL store: created once under the ring's primary key,
rotated by a conditional update of its current key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import connect, store_name, translate_errors
from domain.grants import StoredGrantKey
from domain.ports import GrantKeyRepository

APPROVER_RING = "approver"


def _row(ring: str, key: StoredGrantKey) -> dict[str, Any]:
    return {
        "ring": ring,
        "key_id": key.key_id,
        "public_key": key.public_key,
        "sealed_private": key.sealed_private,
        "created_at": key.created_at,
        "retired_at": key.retired_at,
        "expires_at": key.expires_at,
    }


class SqlGrantKeyRepository:
    def __init__(self, engine: AsyncEngine, ring: str = APPROVER_RING) -> None:
        self._engine = engine
        self._ring = ring
        self._store = store_name(engine.url)

    @asynccontextmanager
    async def _connect(self, *, writing: bool = True) -> AsyncIterator[AsyncConnection]:
        with translate_errors(self._store):
            # Reading takes no write lock on SQLite (nor this process's write gate): roles read
            # the ring to sign inside a unit of work that holds it already.
            async with connect(self._engine, write=writing) as conn:
                yield conn

    async def _read(self, conn: AsyncConnection) -> list[StoredGrantKey]:
        c = t.grant_keys.c
        rows = await conn.execute(
            sa.select(t.grant_keys).where(c.ring == self._ring).order_by(c.created_at, c.key_id)
        )
        return [
            StoredGrantKey(
                key_id=r.key_id,
                public_key=r.public_key,
                sealed_private=r.sealed_private,
                created_at=r.created_at,
                retired_at=r.retired_at,
                expires_at=r.expires_at,
            )
            for r in rows
        ]

    async def keys(self) -> list[StoredGrantKey]:
        async with self._connect(writing=False) as conn:
            keys = await self._read(conn)
            await conn.commit()
            return keys

    async def add_first(self, keys: Sequence[StoredGrantKey]) -> list[StoredGrantKey]:
        [current] = [k for k in keys if k.retired_at is None and k.sealed_private is not None]
        async with self._connect() as conn:
            try:
                # The ring's row first: of processes starting at once, one inserts it and the
                # others fail here (on InnoDB after waiting for the winner's commit).
                await conn.execute(
                    sa.insert(t.grant_key_rings).values(
                        ring=self._ring, current_key_id=current.key_id
                    )
                )
                await conn.execute(sa.insert(t.grant_keys), [_row(self._ring, k) for k in keys])
                await conn.commit()
            except sa.exc.IntegrityError:
                await conn.rollback()
        return await self.keys()

    async def rotate(
        self, current_key_id: str, new: StoredGrantKey, *, at: datetime, expires_at: datetime
    ) -> list[StoredGrantKey] | None:
        rings, c = t.grant_key_rings.c, t.grant_keys.c
        async with self._connect() as conn:
            moved = await conn.execute(
                sa.update(t.grant_key_rings)
                .where(rings.ring == self._ring, rings.current_key_id == current_key_id)
                .values(current_key_id=new.key_id)
            )
            if moved.rowcount != 1:
                await conn.rollback()
                return None
            await conn.execute(
                sa.update(t.grant_keys)
                .where(c.ring == self._ring, c.key_id == current_key_id)
                .values(retired_at=at, expires_at=expires_at)
            )
            await conn.execute(
                sa.delete(t.grant_keys).where(c.ring == self._ring, c.expires_at <= at)
            )
            await conn.execute(sa.insert(t.grant_keys).values(**_row(self._ring, new)))
            keys = await self._read(conn)
            await conn.commit()
            return keys


def sql_grant_keys(engine: AsyncEngine, ring: str = APPROVER_RING) -> GrantKeyRepository:
    return SqlGrantKeyRepository(engine, ring)
