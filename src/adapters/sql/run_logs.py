"""Run logs on SQL as offset-addressed chunks: appends are idempotent, reads are bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.sql import tables as t
from adapters.sql.engine import connect, store_name, translate_errors
from domain.errors import Conflict, FieldError, Invalid
from domain.ports import RunLogStore

# Appended data is stored in pieces of at most this many bytes, so that a read of ``limit``
# bytes loads at most ``limit`` plus two pieces whatever size the appends had.
CHUNK_BYTES = 64 * 1024


class SqlRunLogStore:
    def __init__(self, engine: AsyncEngine, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._engine = engine
        self._store = store_name(engine.url)
        self._chunk = chunk_bytes

    @asynccontextmanager
    async def _connect(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        with translate_errors(self._store):
            async with connect(self._engine, write=write) as conn:
                yield conn

    async def append(self, run_id: str, offset: int, data: bytes) -> int:
        if offset < 0:
            raise Invalid("a log offset cannot be negative", errors=(FieldError("offset", "< 0"),))
        try:
            async with self._connect(write=True) as conn:
                size = await _size(conn, run_id)
                if offset > size:
                    raise Conflict(f"the log of run {run_id} has {size} bytes: "
                                   f"expected offset {size}, got {offset}",
                                   code="log_offset_mismatch")
                # What the log already holds is ignored; only a tail past the end is new.
                tail = data[size - offset:]
                if not tail:
                    return size
                await conn.execute(sa.insert(t.run_log_chunks), [
                    {"run_id": run_id, "start_offset": size + i,
                     "end_offset": size + i + len(tail[i:i + self._chunk]),
                     "data": tail[i:i + self._chunk]}
                    for i in range(0, len(tail), self._chunk)
                ])
                await conn.commit()
                return size + len(tail)
        except Conflict as e:
            # A concurrent resend stored the same offset first: that is the idempotent case.
            if isinstance(e.__cause__, exc.IntegrityError):
                return await self.size(run_id)
            raise

    async def read(self, run_id: str, offset: int = 0, limit: int = 65536) -> bytes:
        if offset < 0 or limit < 0:
            raise Invalid("a log range cannot be negative",
                          errors=(FieldError("offset" if offset < 0 else "limit", "< 0"),))
        if limit == 0:
            return b""
        c = t.run_log_chunks.c
        end = offset + limit
        async with self._connect() as conn:
            rows = await conn.execute(
                sa.select(c.start_offset, c.data)
                .where(c.run_id == run_id, c.end_offset > offset, c.start_offset < end)
                .order_by(c.start_offset))
            out = bytearray()
            for start, data in rows:
                out += data[max(0, offset - start):end - start]
        return bytes(out)

    async def size(self, run_id: str) -> int:
        async with self._connect() as conn:
            return await _size(conn, run_id)


async def _size(conn: AsyncConnection, run_id: str) -> int:
    c = t.run_log_chunks.c
    # The last chunk by primary key holds the end: one index seek at any log size.
    value = (await conn.execute(
        sa.select(c.end_offset).where(c.run_id == run_id)
        .order_by(c.start_offset.desc()).limit(1))).scalar()
    return int(value or 0)


def run_log_store(engine: AsyncEngine) -> RunLogStore:
    return SqlRunLogStore(engine)
