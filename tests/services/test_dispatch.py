"""Dispatch: one holder per run, fenced writes, lost workers' runs reclaimed, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.clock import FakeClock
from adapters.memory.queue import InMemoryQueue
from adapters.memory.repositories import InMemoryPlatformStore
from adapters.memory.run_logs import InMemoryRunLogStore
from adapters.system import UlidIdGenerator
from domain.audit import Outcome
from domain.automations import (
    MAX_ATTEMPTS,
    PhaseResult,
    PhaseStatus,
    Run,
    RunStatus,
    new_run,
    request_cancel,
)
from domain.errors import Conflict, NotFound
from domain.orgs import Organisation
from domain.ports import AuditFilter, Queue
from domain.resources import AutomationSpec, Phase
from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity, run_topic
from domain.users import User

SPEC = AutomationSpec(phases=(Phase("one", "busybox", ("true",)),))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def audit() -> InMemoryAuditLog:
    return InMemoryAuditLog()


async def make_dispatch(clock: FakeClock, audit: InMemoryAuditLog, *, in_store: bool
                        ) -> Dispatch:
    """Dispatch with the run queues another store, fed by the outbox relay, or kept in the
    platform's store and taken from in the claim's transaction (as on the SQL queue)."""
    store = InMemoryPlatformStore(audit, enqueue=in_store)
    queues: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        # In the store's case, the queue only waits: nothing is published to it.
        return queues.setdefault(topic, InMemoryQueue(ack_wait_seconds=60))

    ids = UlidIdGenerator(clock)
    result = Dispatch(
        store.unit_of_work,
        clock,
        ids,
        queue,
        InMemoryRunLogStore(),
        lease_seconds=30,
        queues_in_store=in_store,
    )
    async with result.uow() as uow:
        await uow.users.add(User("u1", "u1@example.com", "x", clock.now()))
        for org in ("org-a", "org-b"):
            await uow.orgs.add(Organisation(org, f"Org {org}", org, clock.now()))
        await uow.commit()
    return result


@pytest.fixture(params=["relayed", "in-store"])
async def d(request: pytest.FixtureRequest, clock: FakeClock, audit: InMemoryAuditLog) -> Dispatch:
    return await make_dispatch(clock, audit, in_store=request.param == "in-store")


async def queued(d: Dispatch, org: str = "org-a") -> Run:
    run, _ = new_run(d.ids.new_id(), SPEC, d.clock.now(), org_id=org, requested_by="u1")
    async with d.uow() as uow:
        await uow.runs.add(run)
        await dispatch.announce(uow, d.ids, run, d.clock.now())
        await uow.commit()
    assert await dispatch.relay_outbox(d) == (0 if d.queues_in_store else 1)
    return run


def worker(name: str, org: str = "org-a") -> WorkerIdentity:
    return WorkerIdentity(org_id=org, worker_id=name, name=name, version="test")


async def status_of(d: Dispatch, run_id: str) -> Run:
    async with d.uow() as uow:
        return await uow.runs.get(run_id)


async def test_a_queued_run_is_claimed_once(d: Dispatch) -> None:
    run = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), wait_seconds=1)
    assert lease is not None and lease.run.id == run.id and lease.fencing_token == 1
    assert await dispatch.claim_next(d, worker("w2"), wait_seconds=0.05) is None
    held = await status_of(d, run.id)
    assert held.status is RunStatus.RUNNING and held.worker_id == "w1"


async def test_in_the_store_each_claim_takes_its_message_with_the_run(
    clock: FakeClock, audit: InMemoryAuditLog
) -> None:
    d = await make_dispatch(clock, audit, in_store=True)
    run = await queued(d)
    # Announced twice (a run handed back, say): the second message finds the run held.
    async with d.uow() as uow:
        await dispatch.announce(uow, d.ids, run, d.clock.now())
        await uow.commit()
    assert await dispatch.claim_next(d, worker("w1"), wait_seconds=0) is not None
    assert await dispatch.claim_next(d, worker("w2"), wait_seconds=0) is None
    async with d.uow() as uow:
        assert uow.queues is not None
        assert await uow.queues.take(run_topic("org-a")) is None


async def test_workers_only_see_their_own_org(d: Dispatch) -> None:
    await queued(d, "org-b")
    assert await dispatch.claim_next(d, worker("w1", "org-a"), wait_seconds=0.05) is None
    assert await dispatch.claim_next(d, worker("w2", "org-b"), wait_seconds=0.05) is not None


async def test_a_duplicate_delivery_never_gives_the_run_twice(d: Dispatch) -> None:
    run = await queued(d)
    # The outbox relayed again (say, after a crash before marking it published).
    async with d.uow() as uow:
        await dispatch.announce(uow, d.ids, run, d.clock.now())
        await uow.commit()
    await dispatch.relay_outbox(d)
    first, second = await asyncio.gather(
        dispatch.claim_next(d, worker("w1"), 0.1), dispatch.claim_next(d, worker("w2"), 0.1)
    )
    assert [lease is not None for lease in (first, second)].count(True) == 1


async def test_fenced_writes_and_completion(d: Dispatch) -> None:
    run = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), 1)
    assert lease is not None
    w1, token = worker("w1"), lease.fencing_token
    assert await dispatch.heartbeat(d, w1, run.id, token) is False
    assert await dispatch.append_log(d, w1, run.id, token, 0, b"line\n") == (5, False)
    assert await dispatch.append_log(d, w1, run.id, token, 0, b"line\n") == (5, False)  # resent
    with pytest.raises(Conflict):
        await dispatch.heartbeat(d, worker("w2"), run.id, token)
    with pytest.raises(Conflict):
        await dispatch.append_log(d, w1, run.id, token + 1, 5, b"x")
    await dispatch.report_phase(d, w1, run.id, token, PhaseResult("one", PhaseStatus.SUCCEEDED, 0))
    ended = await dispatch.complete(d, w1, run.id, token, RunStatus.SUCCEEDED)
    assert ended.status is RunStatus.SUCCEEDED
    again = await dispatch.complete(d, w1, run.id, token, RunStatus.SUCCEEDED)
    assert again == ended
    with pytest.raises(Conflict):
        await dispatch.heartbeat(d, w1, run.id, token)


async def test_another_orgs_worker_cannot_touch_a_run(d: Dispatch) -> None:
    run = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), 1)
    assert lease is not None
    with pytest.raises(NotFound):
        await dispatch.heartbeat(d, worker("w1", "org-b"), run.id, lease.fencing_token)


async def test_a_lost_worker_s_run_is_queued_again_then_fails(
    d: Dispatch, clock: FakeClock, audit: InMemoryAuditLog
) -> None:
    run = await queued(d)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        lease = await dispatch.claim_next(d, worker(f"w{attempt}"), 1)
        assert lease is not None and lease.fencing_token == attempt
        clock.advance(31)
        assert await dispatch.reap(d) == 1
        await dispatch.relay_outbox(d)
        # The old holder is fenced off.
        with pytest.raises(Conflict):
            await dispatch.heartbeat(d, worker(f"w{attempt}"), run.id, attempt)
    final = await status_of(d, run.id)
    assert final.status is RunStatus.FAILED and "worker lost" in final.reason
    events = (await audit.list(AuditFilter())).items
    assert [(e.verb, e.resource_id, e.actor) for e in events] == [
        ("run.failed", run.id, "system:dispatch")
    ]
    assert "worker lost" in events[0].data["reason"]
    assert events[0].data["worker"] == f"w{MAX_ATTEMPTS}"


async def test_heartbeats_keep_the_lease(d: Dispatch, clock: FakeClock) -> None:
    run = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), 1)
    assert lease is not None
    for _ in range(5):
        clock.advance(20)
        await dispatch.heartbeat(d, worker("w1"), run.id, lease.fencing_token)
        assert await dispatch.reap(d) == 0


async def test_a_draining_worker_hands_its_run_back(d: Dispatch) -> None:
    run = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), 1)
    assert lease is not None
    back = await dispatch.release(d, worker("w1"), run.id, lease.fencing_token)
    assert back.status is RunStatus.QUEUED
    assert back.reason == "handed back by its worker; queued again"
    await dispatch.relay_outbox(d)
    again = await dispatch.claim_next(d, worker("w2"), 1)
    assert again is not None and again.fencing_token == 2


async def cancel_asked(d: Dispatch, run_id: str, reason: str) -> None:
    async with d.uow() as uow:
        run = await uow.runs.get(run_id)
        cancelling, _ = request_cancel(run, d.clock.now(), reason)
        await uow.runs.update(cancelling)
        await uow.commit()


async def test_a_run_whose_cancel_was_asked_is_never_run_again(
    d: Dispatch, clock: FakeClock
) -> None:
    # Its worker vanished before it confirmed the cancel: the reaper ends it cancelled.
    lost = await queued(d)
    lease = await dispatch.claim_next(d, worker("w1"), 1)
    assert lease is not None and lease.run.id == lost.id
    await cancel_asked(d, lost.id, "cancelled by ada@example.com")
    clock.advance(31)
    assert await dispatch.reap(d) == 1
    # Its worker drains and hands it back: it ends cancelled too.
    handed = await queued(d)
    lease = await dispatch.claim_next(d, worker("w2"), 1)
    assert lease is not None and lease.run.id == handed.id
    await cancel_asked(d, handed.id, "wrong target")
    back = await dispatch.release(d, worker("w2"), handed.id, lease.fencing_token)
    assert back.status is RunStatus.CANCELLED
    await dispatch.relay_outbox(d)
    assert await dispatch.claim_next(d, worker("w3"), 0.05) is None
    assert [((r := await status_of(d, i)).status, r.reason) for i in (lost.id, handed.id)] == [
        (RunStatus.CANCELLED, "cancelled by ada@example.com: its worker stopped"),
        (RunStatus.CANCELLED, "wrong target: its worker stopped"),
    ]


async def test_the_worker_registry_records_who_was_seen(d: Dispatch) -> None:
    await dispatch.claim_next(d, worker("w9"), 0)
    async with d.uow() as uow:
        seen = await uow.workers.of_org("org-a")
    assert [w.id for w in seen] == ["w9"]


async def test_claims_rewrite_an_unchanged_registry_entry_once_a_second(
        d: Dispatch, clock: FakeClock) -> None:
    async def entry() -> tuple[object, int]:
        async with d.uow() as uow:
            (w,) = await uow.workers.of_org("org-a")
        return w.last_seen_at, w.runs_in_progress

    await queued(d)
    await queued(d)
    await queued(d)
    await queued(d)
    assert await dispatch.claim_next(d, worker("w1"), 0, busy=0) is not None
    first = await entry()
    clock.advance(0.5)
    assert await dispatch.claim_next(d, worker("w1"), 0, busy=0) is not None
    assert await entry() == first  # unchanged and recent: not written again
    assert await dispatch.claim_next(d, worker("w1"), 0, busy=1) is not None
    assert await entry() == (clock.now(), 1)  # a change is written at once
    clock.advance(1)
    assert await dispatch.claim_next(d, worker("w1"), 0, busy=1) is not None
    assert await entry() == (clock.now(), 1)  # and the entry is refreshed after a second


async def test_claims_forget_the_registry_writes_of_workers_long_gone(
        d: Dispatch, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "REGISTERED_KEPT", 2)
    for name in ("w1", "w2", "w3"):
        await queued(d)
        assert await dispatch.claim_next(d, worker(name), 0) is not None
        clock.advance(1)
    # w1 and w2 were forgotten when w3 came: only workers written within the second are kept.
    assert set(d.registered) == {"w3"}


async def test_a_failed_run_is_audited_with_its_reason(
    d: Dispatch, audit: InMemoryAuditLog
) -> None:
    reasons = {RunStatus.SUCCEEDED: "", RunStatus.FAILED: "grant does not match: differs"}
    ended = {}
    for status, reason in reasons.items():
        await queued(d)
        lease = await dispatch.claim_next(d, worker("w1"), 1)
        assert lease is not None
        ended[status] = await dispatch.complete(
            d, worker("w1"), lease.run.id, lease.fencing_token, status, reason
        )
    # A repeated completion changes nothing and records nothing more.
    failed = ended[RunStatus.FAILED]
    await dispatch.complete(d, worker("w1"), failed.id, failed.attempts, RunStatus.FAILED, "x")
    events = (await audit.list(AuditFilter())).items
    assert [(e.verb, e.resource_id, e.org_id, e.outcome, e.actor) for e in events] == [
        ("run.failed", failed.id, "org-a", Outcome.FAILURE, "worker:w1")
    ]
    assert events[0].data["reason"] == "grant does not match: differs"
