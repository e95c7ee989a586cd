"""A worker's /metrics counts the runs it executed, by outcome."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import httpx
import pytest

from adapters.memory.coordinator import InMemoryCoordinator
from adapters.memory.runner import InMemoryRunner, Script
from domain.automations import RunStatus
from entrypoints.exitcodes import ExitCode
from entrypoints.http.common import build_app, worker_runs
from entrypoints.listen import listen_socket
from entrypoints.main import run as opsicle
from entrypoints.worker import serve_metrics, work_with_metrics
from tests.e2e.test_dispatch_processes import free_port
from tests.entrypoints.test_worker_loop import (
    CLOCK,
    IDS,
    hanging,
    queued,
    spec,
    until,
    worker_for,
)


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
    worker = worker_for(InMemoryCoordinator(IDS, CLOCK), InMemoryRunner())
    worker.outcomes["succeeded"] += 1
    listen = f"127.0.0.1:{free_port()}"
    stop = asyncio.Event()
    server = asyncio.create_task(serve_metrics(worker, listen, listen_socket(listen), stop))
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


def test_a_taken_metrics_port_stops_the_worker_at_start_up(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("OPSICLE_METRICS_LISTEN", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        # Nothing listens at the coordinator URL: the worker must not get as far as trying it.
        code = opsicle([
            "start", "worker", "--coordinator-url", f"http://127.0.0.1:{free_port()}",
            "--token-id", "tok_x", "--token", "not-checked", "--metrics-listen", listen,
        ])
    assert code == ExitCode.UNAVAILABLE
    assert capsys.readouterr().err.strip() == (
        f"error: cannot listen on {listen} (--metrics-listen): Address already in use"
    )


async def test_a_metrics_server_that_stops_stops_the_worker_which_drains(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=5)
    run, runner, worker = hanging(coordinator, drain_seconds=0.1)

    async def dying() -> None:
        await until(lambda: runner.jobs)
        raise OSError(24, "Too many open files")

    stop = asyncio.Event()
    with caplog.at_level(logging.ERROR, "opsicle.worker"):
        died = await asyncio.wait_for(
            work_with_metrics(worker, stop, dying(), "127.0.0.1:13373"), 10
        )
    assert died and stop.is_set()
    assert coordinator.released == [run.id]
    assert coordinator.run(run.id).status is RunStatus.QUEUED
    assert [r.getMessage() for r in caplog.records] == [
        "the metrics server on 127.0.0.1:13373 (--metrics-listen) stopped: "
        "OSError: [Errno 24] Too many open files; stopping the worker"
    ]
