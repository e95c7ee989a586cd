"""Dispatch: queued runs reach workers through the queue, under leases fenced by attempts.

The SQL store is the truth about runs; the queue only says "run R of org O is ready". A claim
is a conditional update (queued -> running, attempts + 1), so whatever the queue delivers
twice, a run is held by one worker at a time, and a worker whose lease lapsed can no longer
write to it. A run is announced through the outbox in the transaction that queues it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import attrs

from domain.audit import AuditEvent, Outcome
from domain.automations import (
    PhaseResult,
    Run,
    RunStatus,
    cancel_reason,
    check_lease,
    claim,
    extend_lease,
    lease_expired,
    reclaim,
    record_phase,
    transition,
)
from domain.errors import Conflict, FieldError, Invalid, NotFound
from domain.outbox import OutboxMessage
from domain.ports import (
    Clock,
    Delivery,
    IdGenerator,
    Queue,
    QueueMessage,
    RunLogStore,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.workers import Worker

# Who fails a run whose worker was lost: the coordinator's lease reaper.
SYSTEM = "system:dispatch"
FINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED)


RUN_TOPIC_PREFIX = "runs."
# How often a claim rewrites an unchanged registry entry of the claiming worker; past so many
# workers, those not written for that long are forgotten (see ``Dispatch.registered``).
REGISTRY_REFRESH_SECONDS = 1.0
REGISTERED_KEPT = 1000


def run_topic(org_id: str) -> str:
    return f"{RUN_TOPIC_PREFIX}{org_id}"


def topic_org(topic: str) -> str | None:
    """The org whose runs ``topic`` carries; None for any other topic."""
    return topic.removeprefix(RUN_TOPIC_PREFIX) if topic.startswith(RUN_TOPIC_PREFIX) else None


@attrs.frozen
class Dispatch:
    """The ports the coordinator's use cases need. ``queues_in_store``: the units of work keep
    the run queues (``UnitOfWork.queues``), which ``queues`` reads too."""

    uow: UnitOfWorkFactory
    clock: Clock
    ids: IdGenerator
    queues: Callable[[str], Queue]
    logs: RunLogStore
    lease_seconds: float = 30.0
    queues_in_store: bool = False
    # Per worker, the runs in progress this process last wrote into its registry entry at a
    # claim, and when (monotonic): see ``_claim``.
    registered: dict[str, tuple[int, float]] = attrs.field(factory=dict, eq=False)


@attrs.frozen
class WorkerIdentity:
    """A worker as the coordinator knows it: its org (from its token) and its self-chosen id."""

    org_id: str
    worker_id: str
    token_id: str = ""
    name: str = ""
    version: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Lease:
    """A claimed run. ``approval_requested`` says the run has an approval request although it
    carries no grant (read in the claim's transaction): such a run must not be handed out."""

    run: Run
    fencing_token: int
    lease_seconds: float
    approval_requested: bool = False


async def announce(uow: UnitOfWork, ids: IdGenerator, run: Run, at: datetime) -> None:
    """Stage the queue message for a queued run, in the caller's transaction."""
    if run.org_id is None:
        raise Invalid(
            "a run needs an org to be dispatched",
            errors=(FieldError("org", "is required to queue a run"),),
        )
    body = json.dumps({"runId": run.id, "attempt": run.attempts}).encode()
    await uow.outbox.add(OutboxMessage(ids.new_id(), run_topic(run.org_id), body, at))


async def relay_outbox(d: Dispatch, limit: int = 100) -> int:
    """Publish committed outbox messages; return how many. Safe to run in several places:
    the message id makes a second publish a duplicate the queue drops."""
    async with d.uow() as uow:
        pending = await uow.outbox.pending(limit)
    for message in pending:
        await d.queues(message.topic).publish(QueueMessage(message.id, message.body))
    if pending:
        async with d.uow() as uow:
            await uow.outbox.mark_published([m.id for m in pending], d.clock.now())
            await uow.commit()
    return len(pending)


async def claim_next(
    d: Dispatch,
    worker: WorkerIdentity,
    wait_seconds: float,
    busy: int = 0,
    wanted: Callable[[], Awaitable[bool]] | None = None,
) -> Lease | None:
    """Hold the next queued run of the worker's org, waiting up to ``wait_seconds``.

    The worker's registry entry is written by every call: in the claim's own transaction when
    a run is ready at once, else before the wait. Where the store keeps the run queues, a
    ready message is taken and its run claimed in one transaction; the queue is pulled only
    to wait for one. A run that arrives after a wait is claimed only if ``wanted`` still
    says so (the claimer may have gone meanwhile); if not, its message goes back at once.
    """
    topic = run_topic(worker.org_id)
    queue = d.queues(topic)
    delivery: Delivery | None = None
    if d.queues_in_store:
        lease = await _take_in_store(d, worker, topic, busy)
        if lease is not None:
            return lease
    else:
        delivery = await queue.pull(0.0)
    deadline: float | None = None
    while True:
        if delivery is None:
            if deadline is None:
                await _seen(d, worker, busy=busy)
                # The wait starts after the registry write, and the queue is looked at at
                # least once more: a short wait must not run out on a slow store.
                deadline = d.clock.monotonic() + max(0.0, wait_seconds)
            delivery = await queue.pull(max(0.0, deadline - d.clock.monotonic()))
            if delivery is None:
                return None
            if wanted is not None and not await wanted():
                await delivery.nak()
                return None
        lease = await _take(d, worker, delivery.message.body, busy)
        # Acked whatever happened: a run that was not queued any more needs no delivery.
        await delivery.ack()
        if lease is not None:
            return lease
        delivery = None
        if deadline is not None and d.clock.monotonic() >= deadline:
            return None


async def _take_in_store(
    d: Dispatch, worker: WorkerIdentity, topic: str, busy: int
) -> Lease | None:
    """Take ready messages of ``topic`` from the store's queues and claim their runs, a
    transaction each, until a run is claimed (its lease) or none is ready (None)."""
    while True:
        async with d.uow() as uow:
            if uow.queues is None:
                raise RuntimeError("queues_in_store is set, but the store keeps no queues")
            message = await uow.queues.take(topic)
            if message is None:
                return None
            lease = await _claim(d, uow, worker, message.body, busy)
            # Committed whatever happened: a run that was not queued any more needs no message.
            await uow.commit()
        if lease is not None:
            return lease


async def _take(d: Dispatch, worker: WorkerIdentity, body: bytes, busy: int) -> Lease | None:
    async with d.uow() as uow:
        lease = await _claim(d, uow, worker, body, busy)
        if lease is not None:
            await uow.commit()
    return lease


async def _claim(
    d: Dispatch, uow: UnitOfWork, worker: WorkerIdentity, body: bytes, busy: int
) -> Lease | None:
    """Hold the run the queue message ``body`` names, if it is still queued for this org."""
    try:
        run_id = str(json.loads(body)["runId"])
    except (ValueError, KeyError, TypeError):
        return None
    try:
        run = await uow.runs.get(run_id)
    except NotFound:
        return None
    if run.status is not RunStatus.QUEUED or run.org_id != worker.org_id:
        return None
    held, _ = claim(run, worker.worker_id, d.clock.now(), d.lease_seconds)
    try:
        await uow.runs.update(held, expected=RunStatus.QUEUED, expected_attempts=run.attempts)
    except Conflict:
        return None
    # A worker that claims run after run with as many runs in progress is written once a
    # second: its entry would only have "last seen" moved by a fraction of that.
    now = d.clock.monotonic()
    last = d.registered.get(worker.worker_id)
    if last is None or last[0] != busy or now - last[1] >= REGISTRY_REFRESH_SECONDS:
        await uow.workers.save(_registry_entry(d, worker, busy))
        if len(d.registered) >= REGISTERED_KEPT:
            for known, (_, at) in list(d.registered.items()):
                if now - at >= REGISTRY_REFRESH_SECONDS:
                    del d.registered[known]
        d.registered[worker.worker_id] = (busy, now)
    stripped = not held.grant and await _has_approval(uow, held.id)
    return Lease(held, held.attempts, d.lease_seconds, approval_requested=stripped)


async def heartbeat(
    d: Dispatch, worker: WorkerIdentity, run_id: str, fencing_token: int, busy: int = 1
) -> bool:
    """Extend the lease; return True when the run should be cancelled."""
    now = d.clock.now()
    async with d.uow() as uow:
        run = await _held(uow, worker, run_id, fencing_token)
        extended = extend_lease(run, worker.worker_id, fencing_token, now, d.lease_seconds)
        await uow.runs.update(extended, expected=RunStatus.RUNNING, expected_attempts=fencing_token)
        await uow.commit()
    await _seen(d, worker, busy=busy)
    return extended.cancel_requested


async def append_log(
    d: Dispatch, worker: WorkerIdentity, run_id: str, fencing_token: int, offset: int, data: bytes
) -> tuple[int, bool]:
    """Store a chunk of the run's output; return the log's size and whether the run should be
    cancelled (a phase that prints learns it from its next chunk, before its next heartbeat)."""
    async with d.uow() as uow:
        run = await _held(uow, worker, run_id, fencing_token)
    return await d.logs.append(run_id, offset, data), run.cancel_requested


async def report_phase(
    d: Dispatch, worker: WorkerIdentity, run_id: str, fencing_token: int, result: PhaseResult
) -> None:
    async with d.uow() as uow:
        run = await _held(uow, worker, run_id, fencing_token)
        updated = attrs.evolve(record_phase(run, result), updated_at=d.clock.now())
        await uow.runs.update(updated, expected=RunStatus.RUNNING, expected_attempts=fencing_token)
        await uow.commit()


async def complete(
    d: Dispatch,
    worker: WorkerIdentity,
    run_id: str,
    fencing_token: int,
    status: RunStatus,
    reason: str = "",
    phases: Sequence[PhaseResult] = (),
) -> Run:
    """End a held run; a repeat of the same completion is accepted and changes nothing."""
    if status not in FINAL_STATUSES:
        raise Invalid(
            "a run ends succeeded, failed, timed_out or cancelled",
            errors=(
                FieldError(
                    "status", f"expected one of: {', '.join(s.value for s in FINAL_STATUSES)}"
                ),
            ),
        )
    async with d.uow() as uow:
        run = await _of_org(uow, worker, run_id)
        if (
            run.status is status
            and run.worker_id == worker.worker_id
            and run.attempts == fencing_token
        ):
            return run
        check_lease(run, worker.worker_id, fencing_token)
        for result in phases:
            run = record_phase(run, result)
        if status is RunStatus.CANCELLED and run.cancel_requested:
            reason = cancel_reason(run, reason)
        ended, _ = transition(run, status, d.clock.now(), reason)
        await uow.runs.update(ended, expected=RunStatus.RUNNING, expected_attempts=fencing_token)
        await _audit_failure(d, uow, ended, f"worker:{worker.worker_id}", worker.name)
        await uow.commit()
    return ended


async def _audit_failure(d: Dispatch, uow: UnitOfWork, run: Run, actor: str, worker: str) -> None:
    """Record a failed run and why, in the unit of work that fails it, so the two are kept
    together: among the reasons is a worker (or the claim) refusing a run whose approval grant
    does not match, or its worker lost, which the org's trail must show."""
    if run.status is not RunStatus.FAILED:
        return
    event = AuditEvent(
        id=d.ids.new_id(),
        at=d.clock.now(),
        actor=actor,
        verb="run.failed",
        resource_type="run",
        resource_id=run.id,
        org_id=run.org_id,
        outcome=Outcome.FAILURE,
        data={"reason": run.reason[:300], "worker": worker, "attempt": str(run.attempts)},
    )
    await uow.audit.add(event)


async def release(d: Dispatch, worker: WorkerIdentity, run_id: str, fencing_token: int) -> Run:
    """A draining worker hands a run back: it is queued again (or fails, out of attempts)."""
    now = d.clock.now()
    async with d.uow() as uow:
        run = await _held(uow, worker, run_id, fencing_token)
        back, _ = reclaim(run, now, "handed back by its worker")
        await uow.runs.update(back, expected=RunStatus.RUNNING, expected_attempts=fencing_token)
        if back.status is RunStatus.QUEUED:
            await announce(uow, d.ids, back, now)
        await _audit_failure(d, uow, back, f"worker:{worker.worker_id}", worker.name)
        await uow.commit()
    return back


async def reap(d: Dispatch, limit: int = 100) -> int:
    """Requeue (or fail) runs whose lease expired; return how many were handled."""
    now = d.clock.now()
    async with d.uow() as uow:
        expired = [r for r in await uow.runs.expired_leases(now, limit) if lease_expired(r, now)]
    handled = 0
    for candidate in expired:
        async with d.uow() as uow:
            # Read again: a heartbeat since the scan may have extended the lease.
            run = await uow.runs.get(candidate.id)
            if not lease_expired(run, now):
                continue
            back, _ = reclaim(run, now)
            try:
                await uow.runs.update(
                    back, expected=RunStatus.RUNNING, expected_attempts=run.attempts
                )
            except Conflict:
                continue  # its worker came back in time, or another reaper got there first
            if back.status is RunStatus.QUEUED:
                await announce(uow, d.ids, back, now)
            await _audit_failure(d, uow, back, SYSTEM, run.worker_id or "")
            await uow.commit()
        handled += 1
    return handled


async def _of_org(uow: UnitOfWork, worker: WorkerIdentity, run_id: str) -> Run:
    try:
        run = await uow.runs.get(run_id)
    except NotFound:
        raise NotFound(f"run {run_id} does not exist") from None
    if run.org_id != worker.org_id:
        raise NotFound(f"run {run_id} does not exist")
    return run


async def _held(uow: UnitOfWork, worker: WorkerIdentity, run_id: str, fencing_token: int) -> Run:
    run = await _of_org(uow, worker, run_id)
    check_lease(run, worker.worker_id, fencing_token)
    return run


async def _has_approval(uow: UnitOfWork, run_id: str) -> bool:
    try:
        await uow.approvals.of_run(run_id)
    except NotFound:
        return False
    return True


def _registry_entry(d: Dispatch, worker: WorkerIdentity, busy: int) -> Worker:
    return Worker(
        id=worker.worker_id,
        org_id=worker.org_id,
        name=worker.name or worker.worker_id,
        version=worker.version,
        last_seen_at=d.clock.now(),
        token_id=worker.token_id or None,
        labels=dict(worker.labels),
        runs_in_progress=busy,
    )


async def _seen(d: Dispatch, worker: WorkerIdentity, busy: int) -> None:
    seen = _registry_entry(d, worker, busy)
    try:
        await _save_worker(d, seen)
    except Conflict:
        # The claim slots of a new worker race to register it: one inserts it, the others
        # update the row it made.
        await _save_worker(d, seen)


async def _save_worker(d: Dispatch, worker: Worker) -> None:
    async with d.uow() as uow:
        await uow.workers.save(worker)
        await uow.commit()
