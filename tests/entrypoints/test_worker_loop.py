"""The pull worker against the in-memory coordinator and a scripted runner."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import pytest

from adapters.memory.clock import FakeClock
from adapters.memory.coordinator import InMemoryCoordinator
from adapters.memory.runner import InMemoryRunner, Script
from adapters.runners.process import ProcessRunner
from adapters.system import SystemClock, UlidIdGenerator
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus, new_run
from domain.errors import Forbidden, Invalid, RateLimited, Unauthenticated, Unavailable
from domain.ports import Claim, LineSink, OutputLine, PhaseJob, PhaseOutcome, Stream
from domain.resources import AutomationSpec, Phase
from entrypoints.loops import Backoff
from entrypoints.settings import load as load_settings
from entrypoints.worker import (
    CHUNK_BYTES,
    LeaseLost,
    PhaseReports,
    PullWorker,
    WorkerOptions,
    runner_factory,
)

CLOCK = SystemClock()
IDS = UlidIdGenerator(CLOCK)


def spec(*names: str, timeout: int = 60) -> AutomationSpec:
    return AutomationSpec(phases=tuple(Phase(n, "busybox", ("true",), timeout) for n in names))


def queued(s: AutomationSpec) -> Run:
    run, _ = new_run(IDS.new_id(), s, CLOCK.now(), name="test", org_id="org-a")
    return run


def worker_for(client: object, runner: InMemoryRunner, **options: float) -> PullWorker:
    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    opts = WorkerOptions(
        concurrency=int(options.pop("concurrency", 1)),
        claim_wait=0.2,
        **options,  # type: ignore[arg-type]
    )
    return PullWorker(client, runner_for, CLOCK, opts)  # type: ignore[arg-type]


async def until(check: object, seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def test_a_run_is_executed_logged_reported_and_completed() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=0.6)
    run = queued(spec("build", "test"))
    coordinator.offer(run, env={"TOKEN": "s3cret", "WHO": "ops"}, secret_env=("TOKEN",))
    runner = InMemoryRunner({"build": Script(lines=("hi {WHO}", "token={TOKEN}"))})
    worker = worker_for(coordinator, runner)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: coordinator.completion(run.id) is not None)
    stop.set()
    await task
    assert coordinator.completion(run.id) == (RunStatus.SUCCEEDED, "")
    records = [json.loads(line) for line in coordinator.log(run.id).splitlines()]
    assert [(r["p"], r["s"], r["m"]) for r in records] == [
        ("build", "stdout", "hi ops"),
        ("build", "stdout", "token=***"),
    ]
    assert all(r["t"].endswith("+00:00") for r in records)
    reports = [(r.name, r.status) for r in coordinator.phase_reports(run.id)]
    # In order; a phase's start is reported unless the phase ended within the hold.
    ends = [("build", PhaseStatus.SUCCEEDED), ("test", PhaseStatus.SUCCEEDED)]
    assert [r for r in reports if r[1] is not PhaseStatus.RUNNING] == ends
    assert all(reports.index(r) < reports.index((r[0], PhaseStatus.SUCCEEDED))
               for r in reports if r[1] is PhaseStatus.RUNNING)
    assert runner.jobs[0].env == {"TOKEN": "s3cret", "WHO": "ops"}


async def test_phase_reports_go_in_order_and_the_unsent_ones_are_handed_back() -> None:
    sent: list[PhaseResult] = []
    go_on = asyncio.Event()

    async def send(result: PhaseResult) -> None:
        await go_on.wait()
        sent.append(result)

    reports = PhaseReports(send, lambda: None, lambda exc: None, hold=0)
    started = PhaseResult("a", PhaseStatus.RUNNING)
    finished = PhaseResult("a", PhaseStatus.SUCCEEDED, 0)
    next_one = PhaseResult("b", PhaseStatus.RUNNING)
    reports.put(started)
    await asyncio.sleep(0.01)  # the first report is in flight
    reports.put(finished)
    reports.put(next_one)
    go_on.set()
    # The report in flight completes; the others are for the completion to carry.
    assert await reports.settle() == [finished, next_one]
    assert sent == [started]
    reports.put(PhaseResult("b", PhaseStatus.SUCCEEDED, 0))
    await asyncio.sleep(0)
    assert sent == [started]  # settled: nothing more is sent


async def test_a_phase_that_ends_while_its_start_is_held_back_is_reported_once() -> None:
    sent: list[PhaseResult] = []

    async def send(result: PhaseResult) -> None:
        sent.append(result)

    reports = PhaseReports(send, lambda: None, lambda exc: None, hold=30)
    reports.put(PhaseResult("a", PhaseStatus.RUNNING))
    await asyncio.sleep(0.01)
    assert sent == []  # held back
    ended = PhaseResult("a", PhaseStatus.SUCCEEDED, 0)
    reports.put(ended)
    await asyncio.sleep(0.01)
    assert sent == [ended]
    # A start still held back when the run ends travels with the completion, at once.
    started = PhaseResult("b", PhaseStatus.RUNNING)
    reports.put(started)
    async with asyncio.timeout(1):
        assert await reports.settle() == [started]
    assert sent == [ended]


async def test_a_phase_start_is_reported_once_the_hold_is_over() -> None:
    sent: list[PhaseResult] = []

    async def send(result: PhaseResult) -> None:
        sent.append(result)

    reports = PhaseReports(send, lambda: None, lambda exc: None, hold=0.02)
    started = PhaseResult("a", PhaseStatus.RUNNING)
    reports.put(started)
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.01)
    assert sent == [started]
    assert await reports.settle() == []


async def test_a_lost_lease_stops_the_phase_reports() -> None:
    lost: list[str] = []

    async def send(result: PhaseResult) -> None:
        raise LeaseLost

    reports = PhaseReports(send, lambda: lost.append("lost"), lambda exc: lost.append("failed"))
    reports.put(PhaseResult("a", PhaseStatus.RUNNING))
    reports.put(PhaseResult("a", PhaseStatus.SUCCEEDED, 0))
    await asyncio.sleep(0)  # the end is tried (the start it supersedes is dropped)
    unsent = await reports.settle()
    assert lost == ["lost"] and unsent == [PhaseResult("a", PhaseStatus.SUCCEEDED, 0)]


async def test_a_report_that_fails_for_good_stops_the_phase_reports_and_says_why() -> None:
    failed: list[Exception] = []
    refusal = Invalid("phase 'b' is not a phase of this run")

    async def send(result: PhaseResult) -> None:
        raise refusal

    reports = PhaseReports(send, lambda: None, failed.append, hold=0)
    reports.put(PhaseResult("b", PhaseStatus.SUCCEEDED, 0))
    await asyncio.sleep(0)  # the report is tried
    reports.put(PhaseResult("c", PhaseStatus.SUCCEEDED, 0))
    await asyncio.sleep(0)
    assert failed == [refusal]  # told once, and not tried again
    assert len(await reports.settle()) == 2


class Lines(Sequence[str]):
    """``count`` lines of ``width`` characters, made on demand: the test holds none of them."""

    def __init__(self, count: int, width: int) -> None:
        self._count = count
        self._line = "x" * width

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            raise TypeError("no slices")
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._line

    def __iter__(self) -> Iterator[str]:
        return (self._line for _ in range(self._count))


class CountingCoordinator(InMemoryCoordinator):
    """Checks log offsets and measures chunks without keeping the log."""

    def __init__(self) -> None:
        super().__init__(IDS, CLOCK, lease_seconds=5)
        self.size = 0
        self.chunks = 0
        self.largest = 0

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        self._current(claim)
        assert offset == self.size
        self.size += len(data)
        self.chunks += 1
        self.largest = max(self.largest, len(data))
        return True


async def test_a_50_mb_output_streams_in_bounded_chunks() -> None:
    coordinator = CountingCoordinator()
    run = queued(spec("loud"))
    coordinator.offer(run)
    lines = Lines(count=50 * 1024, width=1024)  # 50 MiB of text
    worker = worker_for(coordinator, InMemoryRunner({"loud": Script(lines=lines)}))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: coordinator.completion(run.id) is not None, 120)
    stop.set()
    await task
    assert coordinator.completion(run.id) == (RunStatus.SUCCEEDED, "")
    assert coordinator.size > 50 * 1024 * 1024
    assert coordinator.largest <= CHUNK_BYTES
    assert coordinator.chunks >= coordinator.size // CHUNK_BYTES
    (stats,) = worker.log_stats
    assert stats.sent == coordinator.size
    assert stats.peak_buffer <= CHUNK_BYTES and stats.largest_chunk <= CHUNK_BYTES


async def test_a_record_larger_than_a_chunk_is_sliced() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=5)
    run = queued(spec("wide"))
    coordinator.offer(run)
    worker = worker_for(
        coordinator, InMemoryRunner({"wide": Script(lines=("y" * 5000,))}), chunk_bytes=1024
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: coordinator.completion(run.id) is not None)
    stop.set()
    await task
    (stats,) = worker.log_stats
    assert stats.largest_chunk == 1024 and stats.peak_buffer <= 1024
    assert json.loads(coordinator.log(run.id))["m"] == "y" * 5000


async def test_cancellation_from_the_heartbeat_stops_the_phase() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=0.3)
    run = queued(spec("hang", "after"))
    coordinator.offer(run)
    runner = InMemoryRunner({"hang": Script(lines=("started",), hang=True)})
    worker = worker_for(coordinator, runner)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: runner.jobs)
    coordinator.cancel(run.id)
    await until(lambda: coordinator.completion(run.id) is not None)
    stop.set()
    await task
    status, _ = coordinator.completion(run.id) or (None, "")
    assert status is RunStatus.CANCELLED
    assert runner.stopped == ["hang"]
    assert [j.phase.name for j in runner.jobs] == ["hang"]


async def test_a_phase_that_prints_is_cancelled_by_a_log_reply_before_any_heartbeat() -> None:
    # A lease of 300 s: the first heartbeat would go out after 100 s.
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=300)
    run = queued(spec("talk"))
    coordinator.offer(run)
    talker = Talker()
    worker = worker_for(coordinator, InMemoryRunner(), flush_seconds=0.05)
    worker.runner_for = talker.runner_for
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: talker.lines > 3)
    coordinator.cancel(run.id)
    await until(lambda: coordinator.completion(run.id) is not None, 5)
    stop.set()
    await task
    assert coordinator.completion(run.id) == (RunStatus.CANCELLED, "phase 'talk' was cancelled")
    assert talker.stopped and coordinator.heartbeats == 0


class Talker(InMemoryRunner):
    """A phase that prints a line every 10 ms until it is stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0

    async def runner_for(self, spec: AutomationSpec) -> Talker:
        return self

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        try:
            while True:
                self.lines += 1
                await sink(OutputLine(Stream.STDOUT, f"line {self.lines}"))
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.stopped.append(job.phase.name)
            raise


async def test_a_lost_lease_stops_the_run_here_without_reporting() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=0.3)
    run = queued(spec("hang"))
    coordinator.offer(run)
    runner = InMemoryRunner({"hang": Script(hang=True)})
    worker = worker_for(coordinator, runner, drain_seconds=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: runner.jobs)
    coordinator.expire_lease(run.id)  # the reaper gave the run to someone else
    await until(lambda: runner.stopped)
    stop.set()
    await task
    # The run went back to the queue (and maybe to this worker again, under a new lease);
    # the first attempt never completed it.
    assert coordinator.completion(run.id) is None or coordinator.run(run.id).attempts > 1
    assert "hang" in runner.stopped


async def test_stopping_lets_short_runs_finish() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=0.6)
    run = queued(spec("quick"))
    gate = asyncio.Event()

    class Slow(InMemoryRunner):
        async def run_phase(self, job, sink):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await super().run_phase(job, sink)

    runner = Slow()
    coordinator.offer(run)
    worker = worker_for(coordinator, runner, drain_seconds=5)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.held)
    stop.set()
    await asyncio.sleep(0.1)
    gate.set()
    await asyncio.wait_for(task, 5)
    assert coordinator.completion(run.id) == (RunStatus.SUCCEEDED, "")
    assert coordinator.released == []


async def test_stopping_hands_back_runs_that_outlive_the_drain_period() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=0.6)
    running, waiting = queued(spec("hang")), queued(spec("hang"))
    coordinator.offer(running)
    runner = InMemoryRunner({"hang": Script(hang=True)})
    worker = worker_for(coordinator, runner, drain_seconds=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: runner.jobs)
    stop.set()
    coordinator.offer(waiting)  # arrives after the stop: nobody here claims it
    await asyncio.wait_for(task, 5)
    assert coordinator.released == [running.id]
    assert coordinator.run(running.id).status is RunStatus.QUEUED
    assert coordinator.run(waiting.id).status is RunStatus.QUEUED
    assert runner.stopped == ["hang"]


class Unreachable(InMemoryCoordinator):
    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__(IDS, clock)
        self.failures = failures
        self.calls = 0

    async def claim(self, wait_seconds: float) -> Claim | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise Unavailable("no coordinator answered")
        return await super().claim(0)


async def test_an_unreachable_coordinator_is_retried_with_growing_jittered_delays() -> None:
    clock = FakeClock()
    coordinator = Unreachable(clock, failures=6)
    worker = PullWorker(coordinator, None, clock, WorkerOptions())  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: coordinator.calls > 6)
    stop.set()
    await task
    delays = clock.slept[:6]
    assert len(delays) == 6
    for n, delay in enumerate(delays, start=1):
        ceiling = min(30.0, 0.5 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling


class Refusing(InMemoryCoordinator):
    async def claim(self, wait_seconds: float) -> Claim | None:
        raise Unauthenticated("the worker token is not valid", code="token_invalid")


async def test_a_refused_token_stops_the_worker() -> None:
    worker = PullWorker(
        Refusing(IDS, CLOCK),
        None,
        CLOCK,
        WorkerOptions(concurrency=3),  # type: ignore[arg-type]
    )
    await asyncio.wait_for(worker.run(asyncio.Event()), 5)
    assert isinstance(worker.failure, Unauthenticated)


async def test_several_slots_run_runs_at_once() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=1)
    gate = asyncio.Event()
    started: list[str] = []

    class Gated(InMemoryRunner):
        async def run_phase(self, job, sink):  # type: ignore[no-untyped-def]
            started.append(job.run_id)
            await gate.wait()
            return await super().run_phase(job, sink)

    runs = [queued(spec("one")) for _ in range(3)]
    for run in runs:
        coordinator.offer(run)
    worker = worker_for(coordinator, Gated(), concurrency=3)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(lambda: len(started) == 3)
    gate.set()
    await until(lambda: all(coordinator.completion(r.id) for r in runs))
    stop.set()
    await task


class RefusingReports(InMemoryCoordinator):
    """Answers every phase report with ``refusal``; hand backs too when ``release_refusal``."""

    def __init__(self, refusal: Exception, release_refusal: Exception | None = None) -> None:
        super().__init__(IDS, CLOCK, lease_seconds=5)
        self.refusal = refusal
        self.release_refusal = release_refusal

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        raise self.refusal

    async def release(self, claim: Claim) -> None:
        if self.release_refusal is not None:
            raise self.release_refusal
        await super().release(claim)


def hanging(
    coordinator: InMemoryCoordinator, **options: float
) -> tuple[Run, InMemoryRunner, PullWorker]:
    """A run offered by ``coordinator`` whose phase hangs until stopped, and its worker."""
    run = queued(spec("hang"))
    coordinator.offer(run)
    runner = InMemoryRunner({"hang": Script(hang=True)})
    return run, runner, worker_for(coordinator, runner, **options)


async def work_until(worker: PullWorker, check: object) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await until(check)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_refused_phase_report_stops_the_run_and_hands_it_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = RefusingReports(Invalid("the phase report is not valid"))
    run, runner, worker = hanging(coordinator)
    with caplog.at_level(logging.ERROR, "opsicle.worker"):
        # Each attempt is stopped and handed back; the last one used, the run fails.
        await work_until(worker, lambda: coordinator.completion(run.id) is not None)
    status, reason = coordinator.completion(run.id) or (None, "")
    assert status is RunStatus.FAILED and "handed back" in reason
    assert coordinator.released == [run.id] * 3 and runner.stopped == ["hang"] * 3
    assert worker.outcomes["handed_back"] == 3 and worker.failure is None
    assert [r.getMessage() for r in caplog.records] == [
        f"run {run.id}: a request about it failed (the phase report is not valid); "
        "stopped it here and handed it back"
    ] * 3


async def test_a_run_that_cannot_be_handed_back_either_is_left_to_its_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = RefusingReports(
        Forbidden("the token may not report phases"), Forbidden("the token may not release")
    )
    run, runner, worker = hanging(coordinator)
    with caplog.at_level(logging.ERROR, "opsicle.worker"):
        await work_until(worker, lambda: runner.stopped and not worker.held)
    assert coordinator.released == [] and coordinator.run(run.id).status is RunStatus.RUNNING
    assert worker.outcomes["lease_lost"] == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "the token may not report phases" in line and "the token may not release" in line


class FlakyReports(InMemoryCoordinator):
    """Phase reports meet an unreachable (or busy) coordinator ``failures`` times first."""

    def __init__(self, failures: int) -> None:
        super().__init__(IDS, CLOCK, lease_seconds=5)
        self.failures = failures

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        if self.failures > 0:
            self.failures -= 1
            if self.failures % 2:
                raise Unavailable("no coordinator answered")
            raise RateLimited("slow down", retry_after=1)
        await super().report_phase(claim, result)


async def test_phase_reports_are_retried_while_the_coordinator_is_unreachable() -> None:
    coordinator = FlakyReports(failures=5)
    run = queued(spec("build", "test"))
    coordinator.offer(run)
    worker = worker_for(coordinator, InMemoryRunner(), backoff=Backoff(base=0.01))  # type: ignore[arg-type]
    await work_until(worker, lambda: coordinator.completion(run.id) is not None)
    assert coordinator.completion(run.id) == (RunStatus.SUCCEEDED, "")
    assert coordinator.failures == 0
    assert [(r.name, r.status) for r in coordinator.run(run.id).phases] == [
        ("build", PhaseStatus.SUCCEEDED),
        ("test", PhaseStatus.SUCCEEDED),
    ]


@pytest.mark.parametrize("choice", ["process", "auto"])
async def test_the_worker_runs_processes_on_one_runner_probed_once(
    choice: str, tmp_path: Path
) -> None:
    settings = load_settings(None, {"XDG_CONFIG_HOME": str(tmp_path)}).with_flags(
        runner=choice, docker_host=f"unix://{tmp_path / 'no-docker.sock'}"
    )
    runner_for = runner_factory(settings)
    spec = AutomationSpec(phases=(Phase("one", "busybox", ("true",)),))
    first, second = await runner_for(spec), await runner_for(spec)
    # Bubblewrap is probed by the first run's runner; the next runs reuse it.
    assert isinstance(first, ProcessRunner)
    assert second is first


async def test_each_runs_directory_is_removed_whatever_it_left_behind(tmp_path: Path) -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=5)
    runs = [
        queued(AutomationSpec(phases=(Phase("tidy", "busybox", ("true",)),))),
        queued(AutomationSpec(phases=(Phase("messy", "busybox", ("mkdir a", "echo x > a/f")),))),
    ]
    for run in runs:
        coordinator.offer(run)
    runner = ProcessRunner(sandbox=False)

    async def runner_for(spec: AutomationSpec) -> ProcessRunner:
        return runner

    work_root = tmp_path / "runs"
    work_root.mkdir()
    options = WorkerOptions(claim_wait=0.2, work_root=str(work_root))
    worker = PullWorker(coordinator, runner_for, CLOCK, options)  # type: ignore[arg-type]
    await work_until(worker, lambda: all(coordinator.completion(r.id) for r in runs))
    assert [coordinator.completion(r.id) for r in runs] == [(RunStatus.SUCCEEDED, "")] * 2
    assert list(work_root.iterdir()) == []
