"""``/metrics`` of a coordinator counts the runs its lease reaper took back."""

from __future__ import annotations

import asyncio
import time

import httpx

from adapters.memory.clock import FakeClock
from adapters.memory.queue import InMemoryQueue
from adapters.system import SystemClock
from domain.automations import new_run
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


def expiries(metrics: str) -> float:
    lines = [line for line in metrics.splitlines()
             if line.startswith("opsicle_lease_expiries_total ")]
    assert len(lines) == 1, metrics
    return float(lines[0].split()[1])


async def test_an_expired_lease_moves_the_counter() -> None:
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
            assert expiries((await client.get("/metrics")).text) == 0
            run, _ = new_run(p.ids.new_id(), SPEC, clock.now(), org_id="org-a",
                             requested_by="someone")
            async with c.platform.uow() as uow:
                await uow.runs.add(run)
                await dispatch.announce(uow, p.ids, run, clock.now())
                await uow.commit()
            worker = WorkerIdentity(org_id="org-a", worker_id="w1", name="w1", version="test")
            lease = await dispatch.claim_next(c.dispatch, worker, 10)
            assert lease is not None and lease.run.id == run.id

            clock.advance(LEASE_SECONDS + 1)  # the worker went silent
            deadline = time.monotonic() + 30
            while c.figures.lease_expiries == 0:
                assert time.monotonic() < deadline, "the reaper never took the run back"
                await asyncio.sleep(0.05)
            assert expiries((await client.get("/metrics")).text) == 1
