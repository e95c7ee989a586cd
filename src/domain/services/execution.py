"""Executing a run's phases with a runner: in order, masked output, stop at the first failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

import attrs

from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus, record_phase, transition
from domain.ports import Clock, Mount, OutputLine, PhaseJob, PhaseOutcome, Runner, Stream
from domain.resources import Phase
from domain.variables import Redactor


@attrs.frozen
class PhaseStarted:
    run_id: str
    index: int
    phase: Phase
    at: datetime


@attrs.frozen
class PhaseOutput:
    run_id: str
    phase: str
    stream: Stream
    text: str
    at: datetime


@attrs.frozen
class PhaseFinished:
    run_id: str
    index: int
    result: PhaseResult
    detail: str = ""


@attrs.frozen
class RunFinished:
    run: Run


Progress = PhaseStarted | PhaseOutput | PhaseFinished | RunFinished
ProgressSink = Callable[[Progress], Awaitable[None]]

_RUN_END = {
    PhaseStatus.FAILED: RunStatus.FAILED,
    PhaseStatus.TIMED_OUT: RunStatus.TIMED_OUT,
    PhaseStatus.CANCELLED: RunStatus.CANCELLED,
}


@attrs.frozen
class Execution:
    """Everything a run needs besides its phases: where it works and what it may see."""

    runner: Runner
    clock: Clock
    workdir: str
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    redactor: Redactor = attrs.field(factory=Redactor)


async def execute(
    run: Run, ctx: Execution, sink: ProgressSink, cancel: asyncio.Event | None = None
) -> Run:
    """Run every phase of a queued ``run``; return it in its terminal state.

    Setting ``cancel`` stops the current phase (the runner's stop ladder) and ends the run
    ``cancelled``; phases after a failing one are skipped.
    """
    cancel = cancel or asyncio.Event()
    run, _ = transition(run, RunStatus.RUNNING, ctx.clock.now())
    for index, phase in enumerate(run.spec.phases):
        if cancel.is_set():
            return await _finish(run, RunStatus.CANCELLED, "cancelled before it started", ctx, sink)
        started = ctx.clock.now()
        run = record_phase(run, PhaseResult(phase.name, PhaseStatus.RUNNING, started_at=started))
        await sink(PhaseStarted(run.id, index, phase, started))
        outcome = await _run_phase(run.id, phase, ctx, sink, cancel)
        result = PhaseResult(
            phase.name, outcome.status, outcome.exit_code, started, ctx.clock.now()
        )
        run = record_phase(run, result)
        detail = ctx.redactor(_describe(phase, outcome))
        await sink(PhaseFinished(run.id, index, result, detail))
        if outcome.status is not PhaseStatus.SUCCEEDED:
            return await _finish(
                run, _RUN_END.get(outcome.status, RunStatus.FAILED), detail, ctx, sink
            )
    return await _finish(run, RunStatus.SUCCEEDED, "", ctx, sink)


async def _run_phase(
    run_id: str, phase: Phase, ctx: Execution, sink: ProgressSink, cancel: asyncio.Event
) -> PhaseOutcome:
    async def on_line(line: OutputLine) -> None:
        await sink(
            PhaseOutput(run_id, phase.name, line.stream, ctx.redactor(line.text), ctx.clock.now())
        )

    job = PhaseJob(
        run_id=run_id, phase=phase, env=dict(ctx.env), workdir=ctx.workdir, mounts=ctx.mounts
    )
    task = asyncio.create_task(ctx.runner.run_phase(job, on_line))
    waiter = asyncio.create_task(cancel.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # Whoever awaits us was cancelled: stop the phase before letting go of it.
        await _stop(task)
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    await _stop(task)
    return PhaseOutcome(PhaseStatus.CANCELLED, None, "")


async def _stop(task: asyncio.Task[PhaseOutcome]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _describe(phase: Phase, outcome: PhaseOutcome) -> str:
    extra = f" ({outcome.detail})" if outcome.detail else ""
    if outcome.status is PhaseStatus.SUCCEEDED:
        return outcome.detail
    if outcome.status is PhaseStatus.TIMED_OUT:
        return f"phase '{phase.name}' timed out after {phase.timeout} s{extra}"
    if outcome.status is PhaseStatus.CANCELLED:
        return f"phase '{phase.name}' was cancelled{extra}"
    code = f"exit code {outcome.exit_code}" if outcome.exit_code is not None else "no exit code"
    return f"phase '{phase.name}' failed with {code}{extra}"


async def _finish(
    run: Run, status: RunStatus, reason: str, ctx: Execution, sink: ProgressSink
) -> Run:
    run, _ = transition(run, status, ctx.clock.now(), reason)
    await sink(RunFinished(run))
    return run
