"""Contract of the audit outbox and its forwarder, on every platform store (memory, SQLite,
MariaDB) towards every separate audit log (memory, and MongoDB through the nx-27017 stand-in).

Decisions under test: an audit event recorded in a unit of work is kept if and only if the
unit commits; the forwarder appends waiting events to the audit log in outbox order, each
once (a resend after a crash is a ``Conflict`` that counts as forwarded), with
a valid hash chain, even with several forwarders at once; one forwarder holds the lease at a
time; while the log is down the events wait, and follow when it returns; and listings show
waiting events after the forwarded ones, so none is missed.

The SQL databases and the Mongo database are shared with the other suites of the session:
assertions look at this test's own events, and every test leaves the outbox empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import attrs
import pytest

from adapters.memory.audit import InMemoryAuditLog, InMemoryAuditOutbox
from adapters.memory.repositories import InMemoryPlatformStore
from adapters.mongo.audit import MongoAuditLog, mongo_client
from adapters.sql.audit import SqlAuditLog, SqlAuditOutbox
from adapters.sql.engine import create_engine
from adapters.sql.repositories import unit_of_work_factory
from adapters.system import SystemClock
from domain.audit import AuditEvent, first_broken_link
from domain.errors import Conflict, Unavailable
from domain.ports import AuditFilter, AuditLog, AuditOutbox, Page, UnitOfWorkFactory
from domain.services.audit import AuditTrail, Forwarder, forward
from tests.contract.builders import audit_event, uid
from tests.contract.mongo_fixture import mongo_database, mongo_url  # noqa: F401


@attrs.frozen
class Side:
    """Units of work whose audit events wait in ``outbox``."""

    uow: UnitOfWorkFactory
    outbox: AuditOutbox


@pytest.fixture(params=["memory", "sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[Side]:
    name: str = request.param
    if name == "memory":
        store = InMemoryPlatformStore()
        yield Side(store.unit_of_work, InMemoryAuditOutbox(store))
        return
    engine = create_engine(request.getfixturevalue(f"{name}_url"))
    try:
        yield Side(unit_of_work_factory(engine, audit_outbox=True), SqlAuditOutbox(engine))
    finally:
        await engine.dispose()


@pytest.fixture(params=["memory", "mongo"])
async def log(request: pytest.FixtureRequest) -> AsyncIterator[AuditLog]:
    """The separate audit store the forwarder appends to."""
    if request.param == "memory":
        yield InMemoryAuditLog()
        return
    client = mongo_client(request.getfixturevalue("mongo_url"))
    try:
        yield MongoAuditLog(client, request.getfixturevalue("mongo_database"))
    finally:
        await client.close()


class FlakyLog:
    """A log that does not answer while ``down`` is set (a store outage), else ``inner``;
    ``appends_left`` appends later it goes down by itself."""

    def __init__(self, inner: AuditLog, appends_left: int | None = None) -> None:
        self.inner = inner
        self.down = False
        self.appends_left = appends_left

    async def append(self, event: AuditEvent) -> AuditEvent:
        if self.appends_left is not None:
            self.down = self.down or self.appends_left <= 0
            self.appends_left -= 1
        self._answer()
        return await self.inner.append(event)

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        self._answer()
        return await self.inner.list(flt, limit=limit, cursor=cursor)

    async def all(self) -> AsyncIterator[AuditEvent]:
        self._answer()
        async for event in self.inner.all():
            yield event

    def _answer(self) -> None:
        if self.down:
            raise Unavailable("the audit store is not answering")


def forwarder(side: Side, log: AuditLog, *, lease_seconds: float = 30.0,
              batch: int = 100) -> Forwarder:
    return Forwarder(side.outbox, log, SystemClock(), uid("fwd"), batch=batch,
                     lease_seconds=lease_seconds)


async def record(side: Side, *events: AuditEvent) -> None:
    """Commit ``events`` each with a unit of work of its own, as changes would."""
    for event in events:
        async with side.uow() as uow:
            await uow.audit.add(event)
            await uow.commit()


async def drain(f: Forwarder) -> None:
    try:
        while await forward(f):
            pass
    finally:
        await f.outbox.release(f.owner)


async def stored(log: AuditLog, actor: str) -> list[AuditEvent]:
    return [e async for e in log.all() if e.actor == actor]


async def waiting(side: Side, actor: str) -> list[AuditEvent]:
    return list((await side.outbox.list(AuditFilter(actor=actor), limit=1000)).items)


async def test_an_event_waits_only_if_its_unit_of_work_commits(side: Side, log: AuditLog) -> None:
    actor = uid("usr")
    kept, dropped = audit_event(actor=actor), audit_event(actor=actor)
    async with side.uow() as uow:
        await uow.audit.add(dropped)
    await record(side, kept)
    assert [e.id for e in await waiting(side, actor)] == [kept.id]
    await drain(forwarder(side, log))


async def test_recording_an_id_twice_is_a_conflict(side: Side, log: AuditLog) -> None:
    event = audit_event(actor=uid("usr"))
    await record(side, event)
    with pytest.raises(Conflict):
        await record(side, event)
    await drain(forwarder(side, log))


async def test_forwarding_appends_in_outbox_order_on_a_valid_chain(
    side: Side, log: AuditLog
) -> None:
    actor = uid("usr")
    events = [audit_event(actor=actor, data={"n": str(n)}) for n in range(7)]
    await record(side, *events)
    await drain(forwarder(side, log, batch=3))
    assert [e.id for e in await stored(log, actor)] == [e.id for e in events]
    assert first_broken_link([e async for e in log.all()]) is None
    assert await waiting(side, actor) == []


async def test_an_event_resent_after_a_crash_is_stored_once(side: Side, log: AuditLog) -> None:
    actor = uid("usr")
    first, second = audit_event(actor=actor), audit_event(actor=actor)
    await record(side, first, second)
    # A forwarder appended the first event and died before taking it off the outbox.
    await log.append(first)
    await drain(forwarder(side, log))
    assert [e.id for e in await stored(log, actor)] == [first.id, second.id]
    assert first_broken_link([e async for e in log.all()]) is None


async def test_one_forwarder_holds_the_lease_at_a_time(side: Side, log: AuditLog) -> None:
    a, b = uid("fwd"), uid("fwd")
    now = datetime.now(UTC)
    lease = timedelta(seconds=30)
    try:
        assert await side.outbox.claim(a, now, now + lease)
        assert not await side.outbox.claim(b, now + timedelta(seconds=1), now + lease)
        assert await side.outbox.claim(a, now + timedelta(seconds=1), now + 2 * lease)
        # Past its expiry another takes it over (its holder stalled or died).
        later = now + 3 * lease
        assert await side.outbox.claim(b, later, later + lease)
        assert not await side.outbox.claim(a, later, later + lease)
        await side.outbox.release(b)
        assert await side.outbox.claim(a, now, now + lease)
    finally:
        await side.outbox.release(a)
        await side.outbox.release(b)


async def test_forwarders_racing_past_their_leases_keep_order_and_store_each_event_once(
    side: Side, log: AuditLog
) -> None:
    actor = uid("usr")
    events = [audit_event(actor=actor, data={"n": str(n)}) for n in range(12)]
    await record(side, *events)
    # A zero lease lapses at once: every forwarder works at the same time, the worst case.
    racers = [forwarder(side, log, lease_seconds=0, batch=5) for _ in range(3)]
    await asyncio.gather(*(drain(f) for f in racers))
    assert [e.id for e in await stored(log, actor)] == [e.id for e in events]
    assert first_broken_link([e async for e in log.all()]) is None
    assert await waiting(side, actor) == []


async def test_events_wait_while_the_log_is_down_and_follow_when_it_returns(
    side: Side, log: AuditLog
) -> None:
    actor = uid("usr")
    flaky = FlakyLog(log)
    before, during = audit_event(actor=actor), audit_event(actor=actor)
    await record(side, before)
    flaky.down = True
    await record(side, during)
    f = forwarder(side, flaky)
    with pytest.raises(Unavailable):
        await forward(f)
    assert [e.id for e in await waiting(side, actor)] == [before.id, during.id]
    flaky.down = False
    await drain(f)
    assert [e.id for e in await stored(log, actor)] == [before.id, during.id]
    assert await waiting(side, actor) == []


async def test_a_log_failing_midway_keeps_what_it_stored_and_the_rest_waits(
    side: Side, log: AuditLog
) -> None:
    actor = uid("usr")
    events = [audit_event(actor=actor) for _ in range(3)]
    await record(side, *events)
    flaky = FlakyLog(log, appends_left=1)  # stores the first event, then stops answering
    f = forwarder(side, flaky)
    with pytest.raises(Unavailable):
        await forward(f)
    assert [e.id for e in await stored(log, actor)] == [events[0].id]
    assert [e.id for e in await waiting(side, actor)] == [e.id for e in events[1:]]
    flaky.down, flaky.appends_left = False, None
    await drain(f)  # the same forwarder: it kept its lease through the outage
    assert [e.id for e in await stored(log, actor)] == [e.id for e in events]


async def test_listings_show_waiting_events_after_the_forwarded_ones(
    side: Side, log: AuditLog
) -> None:
    actor = uid("usr")
    trail = AuditTrail(log, side.outbox)
    forwarded = [audit_event(actor=actor) for _ in range(3)]
    await record(side, *forwarded)
    await drain(forwarder(side, log))
    held = [audit_event(actor=actor) for _ in range(3)]
    await record(side, *held)
    page = await trail.list(AuditFilter(actor=actor), limit=100)
    assert [e.id for e in page.items] == [e.id for e in forwarded + held]
    assert [bool(e.hash) for e in page.items] == [True] * 3 + [False] * 3
    assert page.next_cursor is None
    await drain(forwarder(side, log))


async def test_paging_misses_no_event_forwarded_meanwhile(side: Side, log: AuditLog) -> None:
    actor = uid("usr")
    trail = AuditTrail(log, side.outbox)
    flt = AuditFilter(actor=actor)
    first = [audit_event(actor=actor) for _ in range(2)]
    await record(side, *first)
    await drain(forwarder(side, log))
    rest = [audit_event(actor=actor) for _ in range(4)]
    await record(side, *rest)
    page = await trail.list(flt, limit=3)  # two forwarded, one waiting
    seen = [e.id for e in page.items]
    assert page.next_cursor is not None
    await drain(forwarder(side, log))  # the waiting ones move to the log meanwhile
    cursor: str | None = page.next_cursor
    while cursor is not None:
        page = await trail.list(flt, limit=3, cursor=cursor)
        seen += [e.id for e in page.items]
        cursor = page.next_cursor
    assert set(seen) == {e.id for e in first + rest}
    assert seen[:3] == [e.id for e in first + rest[:1]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def same_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[UnitOfWorkFactory, AuditLog]]:
    """Units of work whose audit log lives in their own store (the embedded composition)."""
    name: str = request.param
    if name == "memory":
        log = InMemoryAuditLog()
        yield InMemoryPlatformStore(log).unit_of_work, log
        return
    engine = create_engine(request.getfixturevalue(f"{name}_url"))
    try:
        yield unit_of_work_factory(engine), SqlAuditLog(engine)
    finally:
        await engine.dispose()


async def test_a_unit_of_work_chains_its_events_into_a_log_in_the_same_store(
    same_store: tuple[UnitOfWorkFactory, AuditLog],
) -> None:
    """No outbox there: the event is chained in the change's own transaction (in memory:
    appended as the unit commits), so it is listed and verified at once."""
    factory, log = same_store
    actor = uid("usr")
    kept, dropped = audit_event(actor=actor), audit_event(actor=actor)
    async with factory() as uow:
        await uow.audit.add(dropped)
    async with factory() as uow:
        await uow.audit.add(kept)
        await uow.commit()
    assert [e.id for e in await stored(log, actor)] == [kept.id]
    assert first_broken_link([e async for e in log.all()]) is None
