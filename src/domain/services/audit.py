"""Audit trail reads (my own trail, an org's trail for those allowed, chain verification) and
the forwarding of the audit outbox to a separate audit store."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta

import attrs

from domain.audit import GENESIS, AuditEvent, digest
from domain.errors import Conflict, FieldError, Invalid
from domain.permissions import Action, Resource
from domain.ports import AuditFilter, AuditLog, AuditOutbox, Clock, Page
from domain.services.authorization import (
    account_id,
    authorize,
    emails_of,
    unit_of_work,
    user_of,
)
from domain.services.platform import Caller, Platform


@attrs.frozen
class Query:
    actor: str | None = None
    verb: str | None = None
    resource_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    cursor: str | None = None


@attrs.frozen
class Verification:
    """The chain holds (``broken`` None) or the first event whose hash or link does not."""

    checked: int
    broken: AuditEvent | None = None
    position: int | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


async def my_trail(p: Platform, caller: Caller, q: Query) -> Page[AuditEvent]:
    """Events the caller was the actor of (an ``actor`` filter cannot widen that)."""
    me = user_of(caller)
    flt = AuditFilter(
        actor=me, verb=q.verb, resource_type=q.resource_type, since=q.since, until=q.until
    )
    return await p.audit.list(flt, limit=q.limit, cursor=q.cursor)


async def org_trail(p: Platform, caller: Caller, ref: str, q: Query) -> Page[AuditEvent]:
    """Every event in the org, for members allowed to view the org (``org:view``); the
    ``actor`` filter takes a user's email or any actor as recorded (a user id, ...)."""
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, Action.VIEW, Resource.ORG, verb="audit.org")
        # Anonymous callers are recorded as anonymous@ADDRESS, an address no account has.
        actor = q.actor and (await account_id(uow, q.actor) or q.actor)
    flt = AuditFilter(
        actor=actor,
        org_id=access.org.id,
        verb=q.verb,
        resource_type=q.resource_type,
        since=q.since,
        until=q.until,
    )
    return await p.audit.list(flt, limit=q.limit, cursor=q.cursor)


async def actor_emails(p: Platform, events: Iterable[AuditEvent]) -> dict[str, str]:
    """The emails of the users among the events' actors, by user id; other actors (workers,
    anonymous callers, the platform itself) have none."""
    async with unit_of_work(p) as uow:
        return await emails_of(uow, (e.actor for e in events))


async def verify_chain(p: Platform, caller: Caller) -> Verification:
    """Walk the whole chain in order, holding one event at a time.

    The rule is ``domain.audit.first_broken_link``'s, applied as the events stream by, so
    a chain of any length is checked in constant memory.
    """
    user_of(caller)
    previous, checked = GENESIS, 0
    async for event in p.audit.all():
        if event.previous_hash != previous or digest(event) != event.hash:
            return Verification(checked, event, checked)
        previous = event.hash
        checked += 1
    return Verification(checked)


# ---------------------------------------------------------------- the audit outbox

FORWARD_BATCH = 100
FORWARD_LEASE_SECONDS = 30.0


@attrs.frozen
class Forwarder:
    """What the audit forwarder of one process needs; ``owner`` names it in the lease."""

    outbox: AuditOutbox
    log: AuditLog
    clock: Clock
    owner: str
    batch: int = FORWARD_BATCH
    lease_seconds: float = FORWARD_LEASE_SECONDS


async def forward(f: Forwarder) -> int:
    """Append waiting events to the audit log in outbox order; how many were forwarded.

    One forwarder at a time holds the lease, so several processes do not interleave their
    appends. Should the lease lapse mid-batch (a stalled process), two may append the same
    events: each walks them in the same order, and an event already stored is a ``Conflict``
    that counts as forwarded, so the chain keeps the outbox order and holds each event once.
    An event appended but not yet removed when its forwarder died is handled the same way.
    """
    now = f.clock.now()
    if not await f.outbox.claim(f.owner, now, now + timedelta(seconds=f.lease_seconds)):
        return 0
    events = await f.outbox.pending(f.batch)
    done: list[str] = []
    try:
        for event in events:
            with contextlib.suppress(Conflict):  # forwarded before, by this or another
                await f.log.append(event)
            done.append(event.id)
    finally:
        # What reached the log leaves the outbox even when the log stops answering midway.
        if done:
            await f.outbox.remove(done)
    return len(done)


class AuditTrail:
    """The audit log as people read it when its events pass through the outbox: forwarded
    events (chained) first, then those still waiting (``hash`` empty), so a listing never
    misses a recent event while the audit store is down or the forwarder is behind.

    ``append`` and ``all`` (verification) are the log's own: waiting events are not chained
    yet. Paging: a cursor into the waiting events also remembers where the forwarded part
    ended, so events forwarded while a client pages still come (possibly a second time,
    once waiting and once forwarded; never not at all).
    """

    def __init__(self, log: AuditLog, outbox: AuditOutbox) -> None:
        self._log = log
        self._outbox = outbox

    async def append(self, event: AuditEvent) -> AuditEvent:
        return await self._log.append(event)

    def all(self) -> AsyncIterator[AuditEvent]:
        return self._log.all()

    async def list(
        self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[AuditEvent]:
        if cursor is None or not cursor.startswith(_WAITING):
            page = await self._log.list(flt, limit=limit, cursor=cursor)
            if page.next_cursor is not None:
                return page
            at = _Resume(cursor, len(page.items), None)
            items = list(page.items)
        else:
            at = _Resume.decode(cursor)
            # Read the forwarded part again from where it was: what came since follows.
            page = await self._log.list(
                flt, limit=min(at.seen + limit, _MAX_PAGE), cursor=at.log_cursor
            )
            items = list(page.items[at.seen :])
            if page.next_cursor is not None:
                return Page(tuple(items), page.next_cursor)
            at = attrs.evolve(at, seen=len(page.items))
        room = limit - len(items)
        waiting = await self._outbox.list(flt, limit=max(room, 1), cursor=at.waiting_cursor)
        if room == 0:
            return Page(tuple(items), at.encode() if waiting.items else None)
        items.extend(waiting.items)
        more = waiting.next_cursor
        return Page(tuple(items), attrs.evolve(at, waiting_cursor=more).encode() if more else None)


_WAITING = "w."
_MAX_PAGE = 1000


@attrs.frozen
class _Resume:
    log_cursor: str | None
    seen: int
    waiting_cursor: str | None

    def encode(self) -> str:
        raw = json.dumps([self.log_cursor, self.seen, self.waiting_cursor]).encode()
        return _WAITING + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> _Resume:
        body = cursor[len(_WAITING) :]
        try:
            log_cursor, seen, waiting = json.loads(
                base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            )
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise _bad_cursor() from exc
        if not (
            isinstance(seen, int)
            and 0 <= seen <= _MAX_PAGE
            and all(c is None or isinstance(c, str) for c in (log_cursor, waiting))
        ):
            raise _bad_cursor()
        return cls(log_cursor, seen, waiting)


def _bad_cursor() -> Invalid:
    return Invalid(
        "the page cursor is not valid",
        code="invalid_cursor",
        errors=(FieldError("cursor", "is not a cursor this list returned"),),
    )
