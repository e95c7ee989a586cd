"""Audit trail reads: my own trail, an org's trail for those allowed, and chain verification."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.audit import GENESIS, AuditEvent, digest
from domain.permissions import Action, Resource
from domain.ports import AuditFilter, Page
from domain.services.authorization import authorize, unit_of_work, user_of
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
    """Every event in the org, for members allowed to view the org (``org:view``)."""
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, Action.VIEW, Resource.ORG, verb="audit.org")
    flt = AuditFilter(
        actor=q.actor,
        org_id=access.org.id,
        verb=q.verb,
        resource_type=q.resource_type,
        since=q.since,
        until=q.until,
    )
    return await p.audit.list(flt, limit=q.limit, cursor=q.cursor)


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
