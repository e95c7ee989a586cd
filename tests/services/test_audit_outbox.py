"""The use cases on the production composition of the audit log (a separate store reached
through the audit outbox), on in-memory adapters, with the audit store going down.

Decisions: a change and its audit event commit together, so while the audit store is down
changes still succeed and their events wait (a run failed by its lost worker too); listings
show the waiting events after the forwarded ones (``hash`` empty); verification covers the
forwarded chain; and once the store answers again the forwarder appends the waiting events in
order on a valid chain.
"""

from __future__ import annotations

import attrs
import pytest

from adapters.memory.audit import InMemoryAuditLog, InMemoryAuditOutbox
from adapters.memory.clock import FakeClock
from adapters.memory.queue import InMemoryQueue
from adapters.memory.repositories import InMemoryPlatformStore
from domain.automations import MAX_ATTEMPTS, RunStatus, new_run
from domain.errors import Unavailable
from domain.ports import Queue
from domain.resources import AutomationSpec, Phase
from domain.services import audit, dispatch, orgs, tokens
from domain.services.audit import AuditTrail, Forwarder, forward
from domain.services.dispatch import Dispatch, WorkerIdentity
from domain.services.platform import Platform
from entrypoints.bootstrap import memory_platform
from tests.contract.test_audit_outbox import FlakyLog
from tests.services.org_support import make_user, unique_code


@attrs.frozen
class Production:
    p: Platform
    store: FlakyLog
    forwarder: Forwarder
    clock: FakeClock


@pytest.fixture
def production() -> Production:
    clock = FakeClock()
    p, _ = memory_platform(clock)
    platform = InMemoryPlatformStore()  # no log of its own: its units fill the outbox
    outbox = InMemoryAuditOutbox(platform)
    store = FlakyLog(InMemoryAuditLog())
    p = attrs.evolve(p, uow=platform.unit_of_work, audit=AuditTrail(store, outbox))
    return Production(p, store, Forwarder(outbox, store, clock, "controller-1"), clock)


async def test_changes_succeed_while_the_audit_store_is_down_and_their_events_follow(
    production: Production,
) -> None:
    p, store = production.p, production.store
    admin = await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    await forward(production.forwarder)
    store.down = True
    issued = await tokens.create_token(p, admin, code, "edge-1")
    await tokens.revoke_token(p, admin, code, issued.view.token.id)
    with pytest.raises(Unavailable):
        await forward(production.forwarder)
    store.down = False

    waiting = await audit.org_trail(p, admin, code, audit.Query(limit=100))
    assert [(e.verb, bool(e.hash)) for e in waiting.items] == [
        ("org.create", True),
        ("token.create", False),
        ("token.revoke", False),
    ]
    assert (await audit.verify_chain(p, admin)).ok

    while await forward(production.forwarder):
        pass
    trail = await audit.org_trail(p, admin, code, audit.Query(limit=100))
    assert [(e.verb, bool(e.hash)) for e in trail.items] == [
        ("org.create", True),
        ("token.create", True),
        ("token.revoke", True),
    ]
    assert (await audit.verify_chain(p, admin)).ok
    stored = [e.verb async for e in store.inner.all()]
    assert stored[-3:] == ["org.create", "token.create", "token.revoke"]


async def test_reading_the_trail_while_the_audit_store_is_down_is_unavailable(
    production: Production,
) -> None:
    p = production.p
    admin = await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    production.store.down = True
    with pytest.raises(Unavailable):
        await audit.org_trail(p, admin, code, audit.Query())
    with pytest.raises(Unavailable):
        await audit.verify_chain(p, admin)


async def test_a_run_failed_by_its_lost_worker_is_audited_after_the_store_returns(
    production: Production,
) -> None:
    p, store, clock = production.p, production.store, production.clock
    queues: dict[str, Queue] = {}
    d = Dispatch(p.uow, clock, p.ids, lambda t: queues.setdefault(t, InMemoryQueue()), p.logs)
    spec = AutomationSpec(phases=(Phase("one", "busybox", ("true",)),))
    run, _ = new_run(p.ids.new_id(), spec, clock.now(), org_id="org-a", requested_by="u1")
    async with d.uow() as uow:
        await uow.runs.add(run)
        await dispatch.announce(uow, d.ids, run, clock.now())
        await uow.commit()
    store.down = True
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await dispatch.relay_outbox(d)
        lease = await dispatch.claim_next(d, WorkerIdentity("org-a", f"w{attempt}"), 1)
        assert lease is not None
        clock.advance(d.lease_seconds + 1)
        assert await dispatch.reap(d) == 1
    async with d.uow() as uow:
        assert (await uow.runs.get(run.id)).status is RunStatus.FAILED
    with pytest.raises(Unavailable):
        await forward(production.forwarder)
    store.down = False

    while await forward(production.forwarder):
        pass
    failed = [e async for e in store.inner.all() if e.verb == "run.failed"]
    assert [(e.resource_id, e.org_id, e.actor) for e in failed] == [
        (run.id, "org-a", "system:dispatch")
    ]
    assert "worker lost" in failed[0].data["reason"]
