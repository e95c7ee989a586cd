"""The audit log in memory: one hash chain, appended under a lock; and the in-memory audit
outbox over an ``InMemoryPlatformStore``."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime

import attrs

from adapters.memory.repositories import (
    InMemoryPlatformStore,
    bad_cursor,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from domain.audit import GENESIS, AuditEvent, chain
from domain.errors import Conflict
from domain.ports import AuditFilter, AuditLog, AuditOutbox, Page


class InMemoryAuditLog:
    def __init__(self) -> None:
        self._events: builtins.list[AuditEvent] = []
        self._ids: set[str] = set()
        self._lock = asyncio.Lock()

    async def append(self, event: AuditEvent) -> AuditEvent:
        # The digest covers ``at`` as text; the SQL store reads it back in UTC, so chain that.
        event = attrs.evolve(event, at=event.at.astimezone(UTC))
        async with self._lock:
            if event.id in self._ids:
                raise Conflict(f"audit event {event.id} already exists")
            linked = chain(event, self._events[-1].hash if self._events else GENESIS)
            self._events.append(linked)
            self._ids.add(linked.id)
        return linked

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        check_limit(limit)
        start = 0
        if cursor is not None:
            (start,) = decode_cursor(cursor, 1)
            if not isinstance(start, int):
                raise bad_cursor()
        return _page(enumerate(self._events), flt, limit, start)

    async def all(self) -> AsyncIterator[AuditEvent]:
        for event in builtins.list(self._events):
            yield event


class InMemoryAuditOutbox:
    """The events waiting in ``store.state.audit_outbox`` and an in-process forwarding lease."""

    def __init__(self, store: InMemoryPlatformStore) -> None:
        self._store = store
        self._lease: tuple[str, datetime] | None = None

    async def claim(self, owner: str, now: datetime, until: datetime) -> bool:
        if self._lease is not None and self._lease[0] != owner and self._lease[1] > now:
            return False
        self._lease = (owner, until)
        return True

    async def release(self, owner: str) -> None:
        if self._lease is not None and self._lease[0] == owner:
            self._lease = None

    async def pending(self, limit: int = 100) -> builtins.list[AuditEvent]:
        check_limit(limit)
        waiting = sorted(self._store.state.audit_outbox.values(), key=lambda p: p[0])
        return [_unchained(e) for _, e in waiting[:limit]]

    async def remove(self, ids: Sequence[str]) -> None:
        # Under the store's lock: a unit of work open meanwhile would commit them back.
        async with self._store.lock:
            state = self._store.state.copy()
            for event_id in ids:
                state.audit_outbox.pop(event_id, None)
            self._store.state = state

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        check_limit(limit)
        after = 0
        if cursor is not None:
            (after,) = decode_cursor(cursor, 1)
            if not isinstance(after, int):
                raise bad_cursor()
        waiting = sorted(self._store.state.audit_outbox.values(), key=lambda p: p[0])
        return _page(((seq, _unchained(e)) for seq, e in waiting), flt, limit, after)


def _unchained(event: AuditEvent) -> AuditEvent:
    return attrs.evolve(event, previous_hash="", hash="")


def _page(events: Iterable[tuple[int, AuditEvent]], flt: AuditFilter, limit: int,
          start: int) -> Page[AuditEvent]:
    """Events at or after position ``start`` that match ``flt``; the cursor is the position
    after the last one."""
    found: builtins.list[tuple[int, AuditEvent]] = []
    for position, e in events:
        if position < start:
            continue
        if ((flt.actor is None or e.actor == flt.actor)
                and (flt.org_id is None or e.org_id == flt.org_id)
                and (flt.verb is None or e.verb == flt.verb)
                and (flt.resource_type is None or e.resource_type == flt.resource_type)
                and (flt.outcome is None or e.outcome is flt.outcome)
                and (flt.since is None or e.at >= flt.since)
                and (flt.until is None or e.at < flt.until)):
            found.append((position, e))
            if len(found) > limit:
                break
    more = len(found) > limit
    found = found[:limit]
    return Page(tuple(e for _, e in found), encode_cursor(found[-1][0] + 1) if more else None)


def audit_log() -> AuditLog:
    return InMemoryAuditLog()


def audit_outbox(store: InMemoryPlatformStore) -> AuditOutbox:
    return InMemoryAuditOutbox(store)
