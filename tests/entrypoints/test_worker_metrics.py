"""A worker's /metrics counts the runs it executed, by outcome."""

from __future__ import annotations

import asyncio

import httpx

from adapters.memory.coordinator import InMemoryCoordinator
from adapters.memory.runner import InMemoryRunner, Script
from entrypoints.http.common import build_app, worker_runs
from tests.entrypoints.test_worker_loop import CLOCK, IDS, queued, spec, until, worker_for


def figure(metrics: str, outcome: str) -> float:
    prefix = f'opsicle_worker_runs_total{{outcome="{outcome}"}} '
    lines = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, metrics
    return float(lines[0].removeprefix(prefix))


async def test_runs_executed_are_counted_by_outcome() -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=5)
    good, bad = queued(spec("build")), queued(spec("deploy"))
    for run in (good, bad, queued(spec("build"))):
        coordinator.offer(run)
    runner = InMemoryRunner({"deploy": Script(exit_code=1)})
    worker = worker_for(coordinator, runner)
    app = build_app("worker", [], [], [worker_runs(worker.outcomes)])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://worker"
    ) as client:
        await until(lambda: sum(worker.outcomes.values()) == 3)
        stop.set()
        await task
        metrics = (await client.get("/metrics")).text
    assert figure(metrics, "succeeded") == 2
    assert figure(metrics, "failed") == 1
    for outcome in ("cancelled", "timed_out", "handed_back", "lease_lost"):
        assert figure(metrics, outcome) == 0


async def test_the_worker_serves_its_metrics_on_metrics_listen_until_stopped() -> None:
    from entrypoints.worker import serve_metrics
    from tests.e2e.test_dispatch_processes import free_port

    worker = worker_for(InMemoryCoordinator(IDS, CLOCK), InMemoryRunner())
    worker.outcomes["succeeded"] += 1
    listen = f"127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    server = asyncio.create_task(serve_metrics(worker, listen, stop))
    async with httpx.AsyncClient(base_url=f"http://{listen}") as client:
        for _ in range(200):
            try:
                reply = await client.get("/metrics")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the metrics server did not start")
        assert figure(reply.text, "succeeded") == 1
        assert (await client.get("/healthz")).json() == {"status": "ok"}
    stop.set()
    await asyncio.wait_for(server, 30)
