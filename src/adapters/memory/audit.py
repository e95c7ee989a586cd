"""The audit log in memory: one hash chain, appended under a lock."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from datetime import UTC

import attrs

from adapters.memory.repositories import bad_cursor, check_limit, decode_cursor, encode_cursor
from domain.audit import GENESIS, AuditEvent, chain
from domain.errors import Conflict
from domain.ports import AuditFilter, AuditLog, Page


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
        found: builtins.list[tuple[int, AuditEvent]] = []
        for position in range(start, len(self._events)):
            e = self._events[position]
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

    async def all(self) -> AsyncIterator[AuditEvent]:
        for event in builtins.list(self._events):
            yield event


def audit_log() -> AuditLog:
    return InMemoryAuditLog()
