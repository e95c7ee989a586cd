"""Runs ("automations"): what was asked, its phases, and the one table of legal status changes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import attrs

from domain.errors import Conflict, IllegalTransition
from domain.resources import AutomationSpec, VariableValue

MAX_ATTEMPTS = 3


class RunStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.TIMED_OUT,
        RunStatus.REJECTED,
        RunStatus.EXPIRED,
    }
)

# The run lifecycle. RUNNING -> QUEUED is a lease that expired: the run goes back to the
# queue while it has attempts left (see ``requeue``).
TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING_APPROVAL: frozenset(
        {RunStatus.QUEUED, RunStatus.REJECTED, RunStatus.EXPIRED, RunStatus.CANCELLED}
    ),
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset(
        {
            RunStatus.SUCCEEDED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.TIMED_OUT,
            RunStatus.QUEUED,
        }
    ),
    **{s: frozenset() for s in TERMINAL},
}


class PhaseStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


@attrs.frozen
class PhaseResult:
    name: str
    status: PhaseStatus = PhaseStatus.PENDING
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class RunEvent:
    run_id: str
    previous: RunStatus | None
    status: RunStatus
    at: datetime
    reason: str = ""


@attrs.frozen
class Run:
    id: str
    spec: AutomationSpec
    status: RunStatus
    created_at: datetime
    name: str = ""
    org_id: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    requested_by: str | None = None
    comment: str = ""
    variables: Mapping[str, VariableValue] = attrs.field(factory=dict)
    phases: tuple[PhaseResult, ...] = ()
    reason: str = ""
    # Each claim increments ``attempts``; it is also the lease's fencing token, so a worker
    # whose lease expired can no longer write to a run someone else now holds.
    attempts: int = 0
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    # Secret variable values, sealed (encrypted) for the worker; shown nowhere.
    sealed_secrets: str = ""
    # The approvers' signed grant in its wire form (``domain.grants``); empty when the run
    # needed no approval. Workers refuse a run whose grant does not match what they would run.
    grant: str = ""
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


# What a run is created with and keeps: updates change the rest (status, phases, lease, ...).
CREATED_WITH = (
    "spec",
    "created_at",
    "name",
    "org_id",
    "template_id",
    "template_version",
    "requested_by",
    "comment",
    "variables",
    "sealed_secrets",
)


def new_run(
    run_id: str,
    spec: AutomationSpec,
    at: datetime,
    *,
    needs_approval: bool = False,
    **fields: Any,
) -> tuple[Run, RunEvent]:
    """A new run, waiting for approval or queued; ``fields`` sets who asked, why and what."""
    status = RunStatus.PENDING_APPROVAL if needs_approval else RunStatus.QUEUED
    phases = tuple(PhaseResult(name=p.name) for p in spec.phases)
    run = Run(id=run_id, spec=spec, status=status, created_at=at, updated_at=at, phases=phases)
    return attrs.evolve(run, **fields), RunEvent(run_id=run_id, previous=None, status=status, at=at)


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def transition(run: Run, target: RunStatus, at: datetime, reason: str = "") -> tuple[Run, RunEvent]:
    """Move ``run`` to ``target``; raise ``IllegalTransition`` if the table forbids it."""
    if not can_transition(run.status, target):
        raise IllegalTransition(f"run {run.id} cannot go from {run.status.value} to {target.value}")
    if (
        target is RunStatus.QUEUED
        and run.status is RunStatus.RUNNING
        and (run.attempts >= MAX_ATTEMPTS)
    ):
        raise IllegalTransition(f"run {run.id} has used its {MAX_ATTEMPTS} attempts; it must fail")
    changes: dict[str, Any] = {"status": target, "updated_at": at, "reason": reason}
    if target is RunStatus.RUNNING:
        changes["attempts"] = run.attempts + 1
        changes["started_at"] = run.started_at or at
    if target is RunStatus.QUEUED and run.status is RunStatus.RUNNING:
        changes["worker_id"] = None
        changes["lease_expires_at"] = None
        changes["phases"] = tuple(PhaseResult(name=p.name) for p in run.phases)
    if target.terminal:
        changes["finished_at"] = at
        changes["lease_expires_at"] = None
        changes["phases"] = tuple(
            attrs.evolve(p, status=PhaseStatus.SKIPPED)
            if p.status is PhaseStatus.PENDING
            else attrs.evolve(p, status=_PHASE_END.get(target, PhaseStatus.FAILED), finished_at=at)
            if p.status is PhaseStatus.RUNNING
            else p
            for p in run.phases
        )
    return attrs.evolve(run, **changes), RunEvent(run.id, run.status, target, at, reason)


_PHASE_END = {
    RunStatus.CANCELLED: PhaseStatus.CANCELLED,
    RunStatus.TIMED_OUT: PhaseStatus.TIMED_OUT,
}


def record_phase(run: Run, result: PhaseResult) -> Run:
    """Replace the named phase's result; raise ``IllegalTransition`` unless the run is running."""
    if run.status is not RunStatus.RUNNING:
        raise IllegalTransition(
            f"run {run.id} is {run.status.value}; phase results need it running"
        )
    names = [p.name for p in run.phases]
    if result.name not in names:
        raise IllegalTransition(f"run {run.id} has no phase '{result.name}'")
    return attrs.evolve(
        run, phases=tuple(result if p.name == result.name else p for p in run.phases)
    )


def claim(run: Run, worker_id: str, at: datetime, lease_seconds: float) -> tuple[Run, RunEvent]:
    """A worker takes a queued run: it runs under a lease whose fencing token is ``attempts``."""
    running, event = transition(run, RunStatus.RUNNING, at)
    lease = at + timedelta(seconds=lease_seconds)
    return attrs.evolve(running, worker_id=worker_id, lease_expires_at=lease), event


def check_lease(run: Run, worker_id: str, fencing_token: int) -> None:
    """Raise ``Conflict`` unless ``worker_id`` holds the run's current lease; the message says
    what became of the run."""
    if run.status.terminal:
        why = f"it has ended ({run.status.value})"
    elif run.status is not RunStatus.RUNNING:
        why = f"it is {run.status.value} again"
    elif run.attempts != fencing_token:
        why = f"lease {run.attempts} holds it now"
    elif run.worker_id != worker_id:
        why = f"worker {run.worker_id} holds it"
    else:
        return
    raise Conflict(
        f"run {run.id} is no longer held by this worker under lease {fencing_token}: {why}",
        code="lease_lost",
    )


def extend_lease(
    run: Run, worker_id: str, fencing_token: int, at: datetime, lease_seconds: float
) -> Run:
    check_lease(run, worker_id, fencing_token)
    return attrs.evolve(run, lease_expires_at=at + timedelta(seconds=lease_seconds), updated_at=at)


def lease_expired(run: Run, at: datetime) -> bool:
    return (
        run.status is RunStatus.RUNNING
        and run.lease_expires_at is not None
        and run.lease_expires_at <= at
    )


def reclaim(run: Run, at: datetime, why: str = "worker lost") -> tuple[Run, RunEvent]:
    """A run whose worker vanished or handed it back (``why``): cancelled when a cancel was
    asked for (it must not run again), else back to the queue while attempts remain, else
    failed."""
    if run.cancel_requested:
        return transition(run, RunStatus.CANCELLED, at, cancel_reason(run, "its worker stopped"))
    if run.attempts < MAX_ATTEMPTS:
        return transition(run, RunStatus.QUEUED, at, f"{why}; queued again")
    return transition(run, RunStatus.FAILED, at, f"{why} ({run.attempts} attempts)")


def request_cancel(
    run: Run, at: datetime, reason: str = "cancelled"
) -> tuple[Run, RunEvent | None]:
    """Cancel a run: at once when it is not running; a running one is told at its heartbeat
    and keeps ``reason`` until its worker reports the end (see ``cancel_reason``)."""
    if run.status.terminal:
        raise IllegalTransition(f"run {run.id} has already ended ({run.status.value})")
    if run.status is RunStatus.RUNNING:
        return attrs.evolve(run, cancel_requested=True, reason=reason, updated_at=at), None
    return transition(run, RunStatus.CANCELLED, at, reason)


def cancel_reason(run: Run, how: str) -> str:
    """Why a running run whose cancel was asked for ended cancelled: the reason given with
    the request (``request_cancel`` keeps it), then ``how`` it stopped."""
    asked = run.reason or "cancelled"
    return f"{asked}: {how}" if how else asked
