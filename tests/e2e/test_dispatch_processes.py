"""A coordinator and workers as real processes: a queued run executes; a killed worker's run
is queued again and finished by another worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from domain.automations import Run, RunStatus, new_run
from domain.orgs import Organisation
from domain.resources import AutomationSpec, Phase
from domain.services.dispatch import announce
from domain.services.handover import seal_secrets
from domain.services.platform import Platform
from domain.tokens import WorkerToken
from entrypoints import settings
from entrypoints.bootstrap import embedded_platform
from tests.e2e.conftest import Processes
from tests.support import free_port

pytestmark = pytest.mark.e2e
LEASE_SECONDS = 3


@pytest.fixture
def processes(opsicle: list[str], tmp_path: Path) -> Iterator[Processes]:
    running = Processes(opsicle, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def start_coordinator(processes: Processes) -> str:
    listen = f"127.0.0.1:{free_port()}"
    proc = processes.start(
        "coordinator",
        "start",
        "coordinator",
        "--listen",
        listen,
        "--data-dir",
        str(processes.data_dir),
        "--lease-seconds",
        str(LEASE_SECONDS),
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://{listen}/readyz", timeout=1).status_code == 200:
                return f"http://{listen}"
        except httpx.TransportError:
            pass
        assert proc.poll() is None, processes.logs()
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.1)


@pytest.fixture
async def platform(processes: Processes) -> AsyncIterator[tuple[Platform, str]]:
    """The coordinator process, and this test's own handle on the same embedded stores."""
    url = start_coordinator(processes)
    resolved = settings.load(
        None,
        {"XDG_CONFIG_HOME": str(processes.data_dir / "config")},
        data_dir=str(processes.data_dir),
    )
    async with embedded_platform(resolved) as (p, _):
        yield p, url


async def org_with_token(p: Platform) -> tuple[str, str, str]:
    org_id = p.ids.new_id()
    secret = p.secrets.new_token()
    token = WorkerToken(p.ids.new_id(), org_id, "worker", p.secrets.hash(secret), p.clock.now())
    async with p.uow() as uow:
        await uow.orgs.add(Organisation(org_id, "E2E", f"e2e-{org_id[-8:]}", p.clock.now()))
        await uow.tokens.add(token)
        await uow.commit()
    return org_id, token.id, secret


async def queue_run(p: Platform, org_id: str, spec: AutomationSpec) -> Run:
    run, _ = new_run(
        p.ids.new_id(),
        spec,
        p.clock.now(),
        name="e2e",
        org_id=org_id,
        variables={"who": "e2e", "password": "***"},
        sealed_secrets=seal_secrets(p.sealer, {"password": "hunter2"}),
    )
    async with p.uow() as uow:
        await uow.runs.add(run)
        await announce(uow, p.ids, run, p.clock.now())
        await uow.commit()
    return run


async def wait_for(p: Platform, run_id: str, seconds: float, done: object) -> Run:
    deadline = time.monotonic() + seconds
    while True:
        async with p.uow() as uow:
            run = await uow.runs.get(run_id)
        if done(run):  # type: ignore[operator]
            return run
        assert time.monotonic() < deadline, f"run stayed {run.status.value}"
        await asyncio.sleep(0.1)


def worker_args(url: str, token_id: str, secret: str, name: str) -> list[str]:
    return [
        "start",
        "worker",
        "--coordinator-url",
        "http://127.0.0.1:9",  # nobody listens there: the worker fails over to the next
        "--coordinator-url",
        url,
        "--token-id",
        token_id,
        "--token",
        secret,
        "--runner",
        "process",
        "--name",
        name,
        "--drain-seconds",
        "2",
    ]


async def log_records(p: Platform, run_id: str) -> list[dict[str, str]]:
    data = await p.logs.read(run_id, 0, 1 << 20)
    return [json.loads(line) for line in data.splitlines()]


async def test_a_queued_run_is_executed_by_a_worker_process(
    processes: Processes, platform: tuple[Platform, str]
) -> None:
    p, url = platform
    org_id, token_id, secret = await org_with_token(p)
    spec = AutomationSpec(
        phases=(
            Phase("greet", "busybox", ('echo "hello $WHO"', 'echo "pw=$PASSWORD" >&2')),
            Phase("count", "busybox", ("for i in 1 2 3; do echo line $i; done",)),
        )
    )
    run = await queue_run(p, org_id, spec)
    processes.start("worker", *worker_args(url, token_id, secret, "w-e2e"))
    try:
        ended = await wait_for(p, run.id, 60, lambda r: r.status.terminal)
    except AssertionError:
        pytest.fail(processes.logs())
    assert ended.status is RunStatus.SUCCEEDED, (ended.reason, processes.logs())
    assert [(ph.status.value, ph.exit_code) for ph in ended.phases] == [
        ("succeeded", 0),
        ("succeeded", 0),
    ]
    records = await log_records(p, run.id)
    assert [(r["p"], r["s"], r["m"]) for r in records] == [
        ("greet", "stdout", "hello e2e"),
        ("greet", "stderr", "pw=***"),
        ("count", "stdout", "line 1"),
        ("count", "stdout", "line 2"),
        ("count", "stdout", "line 3"),
    ]
    async with p.uow() as uow:
        (seen,) = await uow.workers.of_org(org_id)
    assert seen.name == "w-e2e"


async def test_a_killed_workers_run_is_finished_by_another_worker(
    processes: Processes, platform: tuple[Platform, str]
) -> None:
    p, url = platform
    org_id, token_id, secret = await org_with_token(p)
    spec = AutomationSpec(phases=(Phase("slow", "busybox", ("echo begin", "sleep 2", "echo end")),))
    run = await queue_run(p, org_id, spec)
    first = processes.start("worker-1", *worker_args(url, token_id, secret, "w1"))
    try:
        held = await wait_for(
            p, run.id, 60, lambda r: r.status is RunStatus.RUNNING and r.attempts == 1
        )
        # Once its first line is stored, the phase is under way: kill the worker outright.
        deadline = time.monotonic() + 30
        while not await log_records(p, run.id):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    except AssertionError:
        pytest.fail(processes.logs())
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    processes.start("worker-2", *worker_args(url, token_id, secret, "w2"))
    try:
        ended = await wait_for(p, run.id, 60, lambda r: r.status.terminal)
    except AssertionError:
        pytest.fail(processes.logs())
    assert ended.status is RunStatus.SUCCEEDED, (ended.reason, processes.logs())
    assert ended.attempts == 2 and ended.worker_id != held.worker_id
    lines = [r["m"] for r in await log_records(p, run.id)]
    # The first attempt's output stays; the second one's follows it, complete.
    assert lines == ["begin", "begin", "end"]
