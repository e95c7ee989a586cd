"""The standalone role's embedded worker: in-process claims for every org of the instance."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapters.memory.queue import InMemoryQueue
from adapters.memory.runner import InMemoryRunner, Script
from adapters.system import SystemClock
from domain.automations import Run, RunStatus, new_run
from domain.orgs import Organisation
from domain.ports import Delivery, Queue, QueueMessage
from domain.resources import AutomationSpec, Phase
from domain.services.dispatch import announce, run_topic
from domain.services.handover import seal_secrets
from domain.services.platform import Platform
from entrypoints.bootstrap import coordination, memory_platform
from entrypoints.embedded_worker import InProcessCoordinatorClient, PublishSignal
from entrypoints.worker import PullWorker, WorkerOptions

SPEC = AutomationSpec(phases=(Phase("say", "busybox", ("true",)),))


@dataclass
class Standalone:
    p: Platform
    queue: Callable[[str], Queue]  # the run queues, past the publish signal
    signal: PublishSignal


class RecordingQueue(InMemoryQueue):
    """An in-memory queue noting how long each pull may wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def pull(self, timeout_seconds: float) -> Delivery | None:
        self.waits.append(timeout_seconds)
        return await super().pull(timeout_seconds)


@asynccontextmanager
async def standalone(line: str, concurrency: int) -> AsyncIterator[Standalone]:
    """The embedded worker on a memory platform, its phase ``say`` printing ``line``."""
    p, _ = memory_platform(SystemClock())
    queues: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        return queues.setdefault(topic, RecordingQueue())

    signal = PublishSignal()
    runner = InMemoryRunner({"say": Script(lines=(line,))})

    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    async with coordination(p, signal.wrap(queue), lease_seconds=2) as c:
        client = InProcessCoordinatorClient(
            c.dispatch, p.sealer, signal, name="standalone", worker_id="embedded"
        )
        worker = PullWorker(client, runner_for, p.clock, WorkerOptions(concurrency=concurrency))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            yield Standalone(p, queue, signal)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def ended(p: Platform, runs: list[Run]) -> list[Run]:
    """The runs once they all ended (or as they are after 6 s)."""
    for _ in range(300):
        async with p.uow() as uow:
            now = [await uow.runs.get(r.id) for r in runs]
        if all(r.status.terminal for r in now):
            break
        await asyncio.sleep(0.02)
    return now


async def test_the_embedded_worker_serves_every_org() -> None:
    async with standalone("org {ORG} secret {PASSWORD}", concurrency=2) as s:
        p, runs = s.p, []
        async with p.uow() as uow:
            for org in ("org-a", "org-b"):
                await uow.orgs.add(Organisation(org, org, org, p.clock.now()))
                run, _ = new_run(
                    p.ids.new_id(),
                    SPEC,
                    p.clock.now(),
                    org_id=org,
                    variables={"org": org, "password": "***"},
                    sealed_secrets=seal_secrets(p.sealer, {"password": "pw"}),
                )
                await uow.runs.add(run)
                await announce(uow, p.ids, run, p.clock.now())
                runs.append(run)
            await uow.commit()
        done = await ended(p, runs)
    assert [r.status for r in done] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    assert {r.worker_id for r in done} == {"embedded.org-a", "embedded.org-b"}
    logs = [await p.logs.read(r.id) for r in runs]
    assert b"org org-a secret ***" in logs[0] and b"org org-b secret ***" in logs[1]


async def test_the_embedded_worker_never_waits_in_a_queue_but_on_the_publish_signal() -> None:
    # A pull that waits is a request the broker must answer at its expiry (NATS did not,
    # now and then, for waits of 10 ms): the slots wait on the publish signal instead.
    async with standalone("hello", concurrency=2) as s:
        p = s.p
        async with p.uow() as uow:
            await uow.orgs.add(Organisation("org-a", "org-a", "org-a", p.clock.now()))
            run, _ = new_run(p.ids.new_id(), SPEC, p.clock.now(), org_id="org-a")
            await uow.runs.add(run)
            await announce(uow, p.ids, run, p.clock.now())
            await uow.commit()
        [done] = await ended(p, [run])
        await asyncio.sleep(0.2)  # the slots look again, find nothing and wait
        queue = s.queue(run_topic("org-a"))
    assert done.status is RunStatus.SUCCEEDED
    assert isinstance(queue, RecordingQueue) and len(queue.waits) >= 2
    assert set(queue.waits) == {0.0}


def test_the_publish_signal_counts_the_messages_not_taken_yet_per_queue() -> None:
    signal = PublishSignal()
    signal.notify(["runs.a"])
    signal.notify(["runs.a", "runs.b"])
    assert signal.untaken() == {"runs.a", "runs.b"} and signal.count == 2
    signal.taken("runs.a")
    assert signal.untaken() == {"runs.a", "runs.b"}
    signal.taken("runs.a")
    assert signal.untaken() == {"runs.b"}
    # Found empty while nothing else was published: forgotten.
    signal.found_empty("runs.b", signal.count)
    assert signal.untaken() == set()
    # Published to again after the look began: kept.
    seen = signal.count
    signal.notify(["runs.b"])
    signal.found_empty("runs.b", seen)
    assert signal.untaken() == {"runs.b"}


async def test_runs_another_process_queued_are_found_by_scanning_the_runs_table() -> None:
    async with standalone("hello", concurrency=1) as s:
        p, runs = s.p, []
        await asyncio.sleep(0.1)  # the worker has scanned once and waits
        async with p.uow() as uow:
            await uow.orgs.add(Organisation("org-c", "org-c", "org-c", p.clock.now()))
            for _ in range(3):
                run, _ = new_run(p.ids.new_id(), SPEC, p.clock.now(), org_id="org-c")
                await uow.runs.add(run)
                runs.append(run)
            await uow.commit()
        # Published past this process's signal, as another process would.
        for run in runs:
            body = json.dumps({"runId": run.id, "attempt": run.attempts}).encode()
            await s.queue(run_topic("org-c")).publish(QueueMessage(p.ids.new_id(), body))
        assert s.signal.untaken() == set()
        done = await ended(p, runs)
    assert [r.status for r in done] == [RunStatus.SUCCEEDED] * 3
