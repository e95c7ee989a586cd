"""A coordinator in the worker's own process, so worker tests need no HTTP and no stores."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence

import attrs

from domain.automations import MAX_ATTEMPTS, PhaseResult, Run, RunStatus, record_phase, transition
from domain.errors import Conflict, Invalid, NotFound
from domain.ports import Claim, Clock, IdGenerator

DEFAULT_LEASE_SECONDS = 30.0


@attrs.define
class _Lease:
    run_id: str
    lease_id: str
    fencing_token: int
    expires_at: float  # on the clock's monotonic scale
    completed: RunStatus | None = None


class InMemoryCoordinator:
    """The CoordinatorClient port backed by dicts, with the checks a real coordinator makes.

    Tests ``offer`` runs; ``claim`` hands each to one worker under a lease with a fencing
    token that only ever grows. Every later call must carry the current lease, or it raises
    ``Conflict``: a worker whose lease expired or was taken over cannot touch the run.
    """

    def __init__(self, ids: IdGenerator, clock: Clock, *,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 worker_id: str = "worker-1") -> None:
        self._ids = ids
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._worker_id = worker_id
        self._offered: asyncio.Queue[str] = asyncio.Queue()
        self._runs: dict[str, Run] = {}
        self._leases: dict[str, _Lease] = {}  # run id -> the current lease
        self._cancelled: set[str] = set()
        self._logs: dict[str, bytearray] = {}
        self._phase_reports: dict[str, list[PhaseResult]] = {}
        self._reasons: dict[str, str] = {}
        self._tokens = itertools.count(1)
        self._env: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {}
        self.heartbeats = 0
        self.released: list[str] = []

    # ------------------------------------------------------------------ test controls

    def offer(self, run: Run, *, env: Mapping[str, str] | None = None,
              secret_env: tuple[str, ...] = ()) -> None:
        """Queue ``run`` (which must be queued) for the next ``claim``; its claims carry
        ``env`` (``secret_env`` names the entries to mask)."""
        if run.status is not RunStatus.QUEUED:
            raise Invalid(f"only a queued run can be offered; {run.id} is {run.status.value}")
        self._runs[run.id] = run
        self._env[run.id] = (dict(env or {}), secret_env)
        self._offered.put_nowait(run.id)

    def cancel(self, run_id: str) -> None:
        """Cancel a run: a queued one at once, a running one at its worker's next log
        chunk or heartbeat."""
        run = self.run(run_id)
        if run.status is RunStatus.QUEUED:
            self._runs[run_id], _ = transition(run, RunStatus.CANCELLED, self._clock.now(),
                                               "cancelled before a worker took it")
        elif run.status is RunStatus.RUNNING:
            self._cancelled.add(run_id)

    def expire_lease(self, run_id: str) -> None:
        """Do what the coordinator's reaper does to a silent worker's run.

        The run is offered again while it has attempts left and fails otherwise; either way
        the old claim is dead and its calls raise ``Conflict``.
        """
        lease = self._leases.pop(run_id, None)
        if lease is None or lease.completed is not None:
            raise NotFound(f"run {run_id} has no live lease")
        run = self.run(run_id)
        self._cancelled.discard(run_id)
        if run.attempts >= MAX_ATTEMPTS:
            reason = f"lease expired; all {MAX_ATTEMPTS} attempts used"
            self._runs[run_id], _ = transition(run, RunStatus.FAILED, self._clock.now(), reason)
            self._reasons[run_id] = reason
            return
        self._runs[run_id], _ = transition(run, RunStatus.QUEUED, self._clock.now(),
                                           "lease expired")
        self._offered.put_nowait(run_id)

    def run(self, run_id: str) -> Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise NotFound(f"run {run_id} was never offered") from None

    def log(self, run_id: str) -> bytes:
        return bytes(self._logs.get(run_id, b""))

    def phase_reports(self, run_id: str) -> list[PhaseResult]:
        """Every phase result received for the run, in arrival order."""
        return list(self._phase_reports.get(run_id, []))

    def completion(self, run_id: str) -> tuple[RunStatus, str] | None:
        run = self.run(run_id)
        return (run.status, self._reasons.get(run_id, "")) if run.status.terminal else None

    def waiting(self) -> int:
        """Offered runs no worker has claimed yet (cancelled ones included until skipped)."""
        return self._offered.qsize()

    # ------------------------------------------------------------------ the port

    async def claim(self, wait_seconds: float) -> Claim | None:
        try:
            async with asyncio.timeout(max(wait_seconds, 0.0)):
                while True:
                    run_id = await self._offered.get()
                    run = self._runs[run_id]
                    if run.status is RunStatus.QUEUED:  # skips runs cancelled while waiting
                        break
        except TimeoutError:
            return None
        run, _ = transition(run, RunStatus.RUNNING, self._clock.now())
        run = attrs.evolve(run, worker_id=self._worker_id)
        self._runs[run_id] = run
        lease = _Lease(run_id, self._ids.new_id(), next(self._tokens),
                       self._clock.monotonic() + self._lease_seconds)
        self._leases[run_id] = lease
        env, secret_env = self._env.get(run_id, ({}, ()))
        return Claim(run=run, lease_id=lease.lease_id, fencing_token=lease.fencing_token,
                     lease_seconds=self._lease_seconds, env=env, secret_env=secret_env,
                     log_offset=len(self._logs.get(run_id, b"")))

    async def heartbeat(self, claim: Claim) -> bool:
        lease = self._current(claim)
        self.heartbeats += 1
        lease.expires_at = self._clock.monotonic() + self._lease_seconds
        return claim.run.id not in self._cancelled

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        self._current(claim)
        log = self._logs.setdefault(claim.run.id, bytearray())
        # The RunLogStore rule: a resent chunk (offset already stored) is ignored, a gap is
        # refused with the offset the worker should resume from.
        if offset > len(log):
            raise Conflict(f"log of run {claim.run.id} continues at offset {len(log)}, "
                           f"not {offset}")
        if offset == len(log):
            log.extend(data)
        return claim.run.id not in self._cancelled

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        self._current(claim)
        self._runs[claim.run.id] = record_phase(self.run(claim.run.id), result)
        self._phase_reports.setdefault(claim.run.id, []).append(result)

    async def complete(self, claim: Claim, status: RunStatus, reason: str = "",
                       phases: Sequence[PhaseResult] = ()) -> None:
        lease = self._leases.get(claim.run.id)
        if lease is not None and lease.completed is not None \
                and lease.fencing_token == claim.fencing_token:
            # A retried completion (the reply to the first was lost) is fine if it agrees.
            if lease.completed is status:
                return
            raise Conflict(f"run {claim.run.id} already ended as {lease.completed.value}")
        lease = self._current(claim)
        if not status.terminal:
            raise Invalid(f"a run completes with a final status, not {status.value}")
        for result in phases:
            await self.report_phase(claim, result)
        self._runs[claim.run.id], _ = transition(self.run(claim.run.id), status,
                                                 self._clock.now(), reason)
        self._reasons[claim.run.id] = reason
        self._cancelled.discard(claim.run.id)
        lease.completed = status

    async def release(self, claim: Claim) -> None:
        """A draining worker hands the run back: offered again, or failed without attempts."""
        self._current(claim)
        del self._leases[claim.run.id]
        self._cancelled.discard(claim.run.id)
        self.released.append(claim.run.id)
        run = self.run(claim.run.id)
        if run.attempts >= MAX_ATTEMPTS:
            reason = f"handed back; all {MAX_ATTEMPTS} attempts used"
            self._runs[run.id], _ = transition(run, RunStatus.FAILED, self._clock.now(), reason)
            self._reasons[run.id] = reason
            return
        self._runs[run.id], _ = transition(run, RunStatus.QUEUED, self._clock.now(),
                                           "handed back by a draining worker")
        self._offered.put_nowait(run.id)

    def _current(self, claim: Claim) -> _Lease:
        """The claim's lease if it is still the run's live one; ``Conflict`` otherwise."""
        run_id = claim.run.id
        lease = self._leases.get(run_id)
        if lease is None:
            raise Conflict(f"run {run_id} is not leased to anyone")
        if claim.fencing_token != lease.fencing_token or claim.lease_id != lease.lease_id:
            raise Conflict(f"lease on run {run_id} is now held under fencing token "
                           f"{lease.fencing_token}; this claim's token {claim.fencing_token} "
                           "is stale")
        if lease.completed is not None:
            raise Conflict(f"run {run_id} already ended as {lease.completed.value}")
        if self._clock.monotonic() > lease.expires_at:
            raise Conflict(f"lease on run {run_id} expired "
                           f"{self._clock.monotonic() - lease.expires_at:.1f}s ago")
        return lease
