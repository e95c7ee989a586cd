"""Executing phases: order, masking, stopping at the first failure, timeouts and cancellation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from adapters.memory.runner import InMemoryRunner, Script
from domain.automations import PhaseStatus, RunStatus, new_run
from domain.resources import AutomationSpec, Phase
from domain.services.execution import (
    Execution,
    PhaseFinished,
    PhaseOutput,
    PhaseStarted,
    Progress,
    RunFinished,
    execute,
)
from domain.variables import Redactor

SPEC = AutomationSpec(
    phases=tuple(Phase(name, "busybox", ("true",), timeout=5) for name in ("one", "two", "three"))
)


class Clock:
    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


async def run_with(
    runner: InMemoryRunner, cancel: asyncio.Event | None = None, redactor: Redactor | None = None
) -> tuple[list[Progress], RunStatus]:
    events: list[Progress] = []

    async def sink(event: Progress) -> None:
        events.append(event)

    run, _ = new_run("r1", SPEC, Clock().now())
    ctx = Execution(
        runner=runner,
        clock=Clock(),
        workdir="/w",
        env={"TOKEN": "hunter2"},
        redactor=redactor or Redactor(),
    )
    final = await execute(run, ctx, sink, cancel)
    assert isinstance(events[-1], RunFinished) and events[-1].run == final
    return events, final.status


async def test_phases_run_in_order_and_the_run_succeeds() -> None:
    runner = InMemoryRunner({"one": Script(["a"]), "two": Script(["b"]), "three": Script(["c"])})
    events, status = await run_with(runner)
    assert status is RunStatus.SUCCEEDED
    assert [j.phase.name for j in runner.jobs] == ["one", "two", "three"]
    assert [e.text for e in events if isinstance(e, PhaseOutput)] == ["a", "b", "c"]
    assert all(j.env == {"TOKEN": "hunter2"} and j.workdir == "/w" for j in runner.jobs)


async def test_the_first_failing_phase_stops_the_run() -> None:
    runner = InMemoryRunner({"two": Script(["boom"], exit_code=3)})
    events, status = await run_with(runner)
    assert status is RunStatus.FAILED
    assert [j.phase.name for j in runner.jobs] == ["one", "two"]
    finished = [e for e in events if isinstance(e, PhaseFinished)]
    assert finished[-1].detail == "phase 'two' failed with exit code 3"
    final = events[-1]
    assert isinstance(final, RunFinished)
    assert [p.status for p in final.run.phases] == [
        PhaseStatus.SUCCEEDED,
        PhaseStatus.FAILED,
        PhaseStatus.SKIPPED,
    ]
    assert final.run.reason == "phase 'two' failed with exit code 3"


async def test_secret_values_are_masked_in_every_line() -> None:
    runner = InMemoryRunner({"one": Script(["token={TOKEN}", "no secret here"])})
    events, _ = await run_with(runner, redactor=Redactor(("hunter2",)))
    assert [e.text for e in events if isinstance(e, PhaseOutput)] == ["token=***", "no secret here"]


async def test_cancelling_stops_the_current_phase_and_ends_cancelled() -> None:
    runner = InMemoryRunner({"two": Script(["started"], hang=True)})
    cancel = asyncio.Event()
    task = asyncio.create_task(run_with(runner, cancel))
    while not runner.jobs or runner.jobs[-1].phase.name != "two":
        await asyncio.sleep(0)
    cancel.set()
    events, status = await task
    assert status is RunStatus.CANCELLED
    finished = events[-1]
    assert isinstance(finished, RunFinished)
    assert finished.run.reason == "phase 'two' was cancelled"
    assert runner.stopped == ["two"]
    assert any(isinstance(e, PhaseStarted) and e.phase.name == "two" for e in events)
