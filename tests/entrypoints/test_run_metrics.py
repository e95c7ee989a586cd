"""``/metrics`` of a coordinator: queue depth and run outcomes from the store, and the runs its
lease reaper took back, moving as runs are queued, claimed, lost and finished."""

from __future__ import annotations

import asyncio
import time

import httpx

from adapters.memory.clock import FakeClock
from adapters.memory.queue import InMemoryQueue
from adapters.system import SystemClock
from domain.automations import RunStatus, new_run
from domain.orgs import Organisation
from domain.ports import Queue
from domain.resources import AutomationSpec, Phase
from domain.services import dispatch
from domain.services.dispatch import WorkerIdentity
from entrypoints.bootstrap import coordination, memory_platform
from entrypoints.http.common import lease_expiries
from entrypoints.http.coordinator import create_app

SPEC = AutomationSpec(phases=(Phase("one", "busybox", ("true",)),))
LEASE_SECONDS = 30


def figure(metrics: str, series: str) -> float:
    lines = [line for line in metrics.splitlines() if line.startswith(series + " ")]
    assert len(lines) == 1, metrics
    return float(lines[0].split()[1])


async def test_queue_depth_outcomes_and_lease_expiries_move() -> None:
    clock = FakeClock()
    p, _ = memory_platform(clock)
    queues: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        return queues.setdefault(topic, InMemoryQueue(ack_wait_seconds=60))

    async with p.uow() as uow:
        await uow.orgs.add(Organisation("org-a", "Org A", "org-a", clock.now()))
        await uow.commit()
    # The loops pause on real time; leases expire on the fake clock when the test moves it.
    async with coordination(
        p, queue, lease_seconds=LEASE_SECONDS, reap_interval=0.05, loop_clock=SystemClock()
    ) as c:
        app = create_app(p, c.dispatch, [], c.stopping, collectors=[lease_expiries(c.figures)])
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://coordinator"
        ) as client:

            async def scrape() -> str:
                return (await client.get("/metrics")).text

            metrics = await scrape()
            assert figure(metrics, "opsicle_lease_expiries_total") == 0
            assert figure(metrics, "opsicle_queue_depth") == 0
            assert figure(metrics, 'opsicle_run_outcomes_total{status="succeeded"}') == 0

            run, _ = new_run(p.ids.new_id(), SPEC, clock.now(), org_id="org-a",
                             requested_by="someone")
            async with c.platform.uow() as uow:
                await uow.runs.add(run)
                await dispatch.announce(uow, p.ids, run, clock.now())
                await uow.commit()
            assert figure(await scrape(), "opsicle_queue_depth") == 1

            worker = WorkerIdentity(org_id="org-a", worker_id="w1", name="w1", version="test")
            lease = await dispatch.claim_next(c.dispatch, worker, 10)
            assert lease is not None and lease.run.id == run.id
            assert figure(await scrape(), "opsicle_queue_depth") == 0

            clock.advance(LEASE_SECONDS + 1)  # the worker went silent
            deadline = time.monotonic() + 30
            while c.figures.lease_expiries == 0:
                assert time.monotonic() < deadline, "the reaper never took the run back"
                await asyncio.sleep(0.05)
            metrics = await scrape()
            assert figure(metrics, "opsicle_lease_expiries_total") == 1
            assert figure(metrics, "opsicle_queue_depth") == 1  # queued again

            again = await dispatch.claim_next(c.dispatch, worker, 10)
            assert again is not None
            await dispatch.complete(c.dispatch, worker, run.id, again.fencing_token,
                                    RunStatus.SUCCEEDED)
            metrics = await scrape()
            assert figure(metrics, 'opsicle_run_outcomes_total{status="succeeded"}') == 1
            assert figure(metrics, 'opsicle_run_outcomes_total{status="failed"}') == 0
            assert figure(metrics, "opsicle_queue_depth") == 0
