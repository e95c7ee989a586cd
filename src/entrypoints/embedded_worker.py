"""The standalone role's own worker: the dispatch use cases called in-process, for every org.

Tokens belong to orgs, so a worker holding one serves one org. The embedded worker is part
of the process that owns the stores and the queue: there is no network boundary to
authenticate across, so it holds no token and claims, directly through ``Dispatch``, the
runs of whichever orgs have runs queued. Per org it appears in the worker registry as
``<name>.<org id>``, so ``opsicle list workers`` of each org shows it. Remote workers with
org tokens can connect to the same standalone process as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager

from domain.automations import PhaseResult, Run, RunStatus
from domain.errors import NotFound
from domain.grants import GrantVerifier
from domain.ports import Claim, Delivery, Queue, QueueMessage, Sealer
from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity, run_topic, topic_org
from domain.services.handover import claim_for_worker
from domain.services.platform import Platform
from entrypoints.settings import Settings
from entrypoints.version import VERSION

log = logging.getLogger("opsicle.worker")
# Fallback poll for work published by other processes (this one is woken on its own publishes).
POLL_SECONDS = 1.0
QUEUED_SCAN = 200


class PublishSignal:
    """Wakes the embedded worker when this process publishes to a run queue, and counts the
    messages this process published to each queue that the worker has not taken yet; passes
    on the cancels asked for in this process (``cancel_asked``)."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = asyncio.Event()
        self._untaken: Counter[str] = Counter()
        # The embedded worker's, while it runs.
        self.heartbeat_now: Callable[[str], None] | None = None

    @property
    def count(self) -> int:
        return self._count

    def notify(self, topics: Collection[str]) -> None:
        self._count += 1
        self._untaken.update(topics)
        self._changed.set()

    def cancel_asked(self, run: Run) -> None:
        """A cancel of the running ``run`` was asked for in this process: the embedded worker,
        if it holds the run, sends its heartbeat now and so stops the run at once."""
        if self.heartbeat_now is not None:
            self.heartbeat_now(run.id)

    def untaken(self) -> set[str]:
        """The topics this process published messages to that were not taken yet."""
        return set(self._untaken)

    def taken(self, topic: str) -> None:
        self._untaken[topic] -= 1
        if self._untaken[topic] <= 0:
            del self._untaken[topic]

    def found_empty(self, topic: str, seen: int) -> None:
        """``topic``'s queue was empty: forget it, unless something was published since
        ``count`` was ``seen``."""
        if self._count == seen:
            self._untaken.pop(topic, None)

    async def wait(self, seen: int, seconds: float) -> None:
        """Return once something was published after ``seen``, or after ``seconds``."""
        if self._count != seen:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._changed.wait()

    def wrap(self, queues: Callable[[str], Queue]) -> Callable[[str], Queue]:
        def queue(topic: str) -> Queue:
            return _Notifying(queues(topic), self, topic)

        return queue


class _Notifying:
    def __init__(self, inner: Queue, signal: PublishSignal, topic: str) -> None:
        self._inner = inner
        self._signal = signal
        self._topic = topic

    async def publish(self, message: QueueMessage) -> None:
        await self._inner.publish(message)
        self._signal.notify((self._topic,))

    async def pull(self, timeout_seconds: float) -> Delivery | None:
        return await self._inner.pull(timeout_seconds)

    async def depth(self) -> int:
        return await self._inner.depth()


class InProcessCoordinatorClient:
    """The CoordinatorClient port bound to ``Dispatch``: claims the runs of every org."""

    def __init__(
        self,
        d: Dispatch,
        sealer: Sealer,
        signal: PublishSignal,
        *,
        name: str,
        worker_id: str,
        labels: dict[str, str] | None = None,
    ) -> None:
        self._d = d
        self._sealer = sealer
        self._signal = signal
        self._name = name
        self._worker_id = worker_id
        self._labels = tuple(sorted((labels or {}).items()))
        self._held: dict[str, WorkerIdentity] = {}
        self._turn = 0
        # Orgs the runs table had queued runs of, until their queue is found empty, and when
        # it was last scanned for them (loop time).
        self._found: set[str] = set()
        self._scanned: float | None = None
        # One slot looks for work at a time: a publish wakes every idle slot, and the others
        # then find the run taken instead of each trying the same queues at once.
        self._looking = asyncio.Lock()

    def _identity(self, org_id: str) -> WorkerIdentity:
        return WorkerIdentity(
            org_id=org_id,
            worker_id=f"{self._worker_id}.{org_id}",
            name=f"{self._name} (embedded)",
            version=VERSION,
            labels=self._labels,
        )

    async def _candidates(self) -> list[str]:
        """The orgs that may have runs queued: those this process published runs of that were
        not taken yet, and those the runs table has queued runs of (published by other
        processes, or before a restart), scanned for at most once per ``POLL_SECONDS``."""
        now = asyncio.get_running_loop().time()
        if self._scanned is None or now - self._scanned >= POLL_SECONDS:
            self._scanned = now
            async with self._d.uow() as uow:
                self._found.update(await uow.runs.queued_orgs(limit=QUEUED_SCAN))
        published = (topic_org(topic) for topic in self._signal.untaken())
        orgs = sorted(self._found.union(org for org in published if org))
        # Start with a different org each time, so one busy org cannot starve the others.
        self._turn += 1
        if orgs:
            cut = self._turn % len(orgs)
            orgs = orgs[cut:] + orgs[:cut]
        return orgs

    async def claim(self, wait_seconds: float) -> Claim | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_seconds, 0.0)
        while True:
            seen = self._signal.count
            async with self._looking:
                claim = await self._claim_any()
            if claim is not None:
                return claim
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            await self._signal.wait(seen, min(remaining, POLL_SECONDS))

    async def _claim_any(self) -> Claim | None:
        for org_id in await self._candidates():
            worker = self._identity(org_id)
            seen = self._signal.count
            # No wait in the queue: ``claim`` waits on the publish signal. (A pull that waits
            # is a request the broker must end at its expiry; NATS now and then left 10 ms ones
            # unanswered, and the claim then failed after the grace period.)
            handover = await claim_for_worker(
                self._d, self._sealer, worker, 0.0, busy=len(self._held)
            )
            if handover is None:
                self._found.discard(org_id)
                self._signal.found_empty(run_topic(org_id), seen)
            else:
                self._signal.taken(run_topic(org_id))
                run = handover.lease.run
                self._held[run.id] = worker
                return Claim(
                    run=run,
                    lease_id=f"{run.id}/{handover.lease.fencing_token}",
                    fencing_token=handover.lease.fencing_token,
                    lease_seconds=handover.lease.lease_seconds,
                    env=dict(handover.env),
                    secret_env=handover.secret_env,
                    heartbeat_seconds=handover.heartbeat_seconds,
                    log_offset=handover.log_offset,
                )
        return None

    def _worker(self, claim: Claim) -> WorkerIdentity:
        try:
            return self._held[claim.run.id]
        except KeyError:
            raise NotFound(f"run {claim.run.id} is not held by this worker") from None

    async def heartbeat(self, claim: Claim) -> bool:
        cancel = await dispatch.heartbeat(
            self._d, self._worker(claim), claim.run.id, claim.fencing_token, len(self._held)
        )
        return not cancel

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        _, cancel = await dispatch.append_log(
            self._d, self._worker(claim), claim.run.id, claim.fencing_token, offset, data
        )
        return not cancel

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        await dispatch.report_phase(
            self._d, self._worker(claim), claim.run.id, claim.fencing_token, result
        )

    async def complete(
        self,
        claim: Claim,
        status: RunStatus,
        reason: str = "",
        phases: Sequence[PhaseResult] = (),
    ) -> None:
        await dispatch.complete(
            self._d, self._worker(claim), claim.run.id, claim.fencing_token, status, reason, phases
        )
        self._held.pop(claim.run.id, None)

    async def release(self, claim: Claim) -> None:
        await dispatch.release(self._d, self._worker(claim), claim.run.id, claim.fencing_token)
        self._held.pop(claim.run.id, None)


@asynccontextmanager
async def embedded_worker(
    platform: Platform,
    d: Dispatch,
    settings: Settings,
    stop: asyncio.Event,
    signal: PublishSignal,
    *,
    grants: GrantVerifier | None = None,
) -> AsyncIterator[None]:
    """Run one worker in this process until ``stop`` is set; on exit it has drained.

    ``grants`` verifies the grants runs carry; a run that needed approval but carries none
    is failed by the claim itself (``claim_for_worker``), before it reaches this worker.
    """
    from entrypoints.worker import PullWorker, WorkerOptions, runner_factory

    name = socket.gethostname() or "standalone"
    client = InProcessCoordinatorClient(
        d, platform.sealer, signal, name=name, worker_id=f"embedded-{secrets.token_hex(4)}"
    )
    worker = PullWorker(
        client,
        runner_factory(settings),
        platform.clock,
        WorkerOptions(
            concurrency=int(settings["concurrency"]),
            drain_seconds=float(settings["drain-seconds"]),
        ),
        grants=grants,
    )
    signal.heartbeat_now = worker.heartbeat_now
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
        signal.heartbeat_now = None
