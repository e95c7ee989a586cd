"""Reliability with real processes on NATS JetStream and MariaDB: workers killed mid-run, a
coordinator killed mid-claim, NATS restarted while runs flow, a worker frozen past its lease.

Each scenario queues a batch of one-phase runs (through the run use cases, on the database
the coordinators use) and disturbs the system while they flow. Every phase prints a start and
an end line carrying the run id, a token unique to that execution, and the time in
nanoseconds. Afterwards: every run succeeded (none lost), no log line is stored twice, and in
each run's log the executions follow one another: no execution's stored lines reach past the
start of the next one, so no two workers executed a run at the same time, and a worker that
lost its lease wrote nothing after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import httpx
import nats as nats_py
import pytest
import sqlalchemy as sa

from adapters.sql.engine import create_engine
from adapters.sql.migrate import migrate
from domain.automations import Run, RunStatus, new_run
from domain.resources import AutomationSpec, Phase
from domain.services.dispatch import announce
from domain.services.platform import Platform
from entrypoints import settings
from entrypoints.bootstrap import embedded_platform
from tests.e2e.conftest import TRACED_COMMANDS, Processes, check_runs, runs_of, wait_ended
from tests.e2e.test_dispatch_processes import org_with_token
from tests.support import NatsServer, free_port, port_open, require_service

pytestmark = pytest.mark.e2e

MARIADB_SERVER = "mysql+asyncmy://root@127.0.0.1:3306"
LEASE_SECONDS = 3
RUNS_PER_SCENARIO = 90
WORKERS = 3
CONCURRENCY = 4
SPEC = AutomationSpec(phases=(Phase("work", "busybox", TRACED_COMMANDS),))


def _aside(coro: Any) -> Any:
    """Run ``coro`` on a loop of its own thread, away from the tests' loops."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _execute(url: str, statement: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A throwaway, migrated MariaDB database, dropped at the end of the module."""
    require_service("MariaDB", port_open("127.0.0.1", 3306), "no server on 127.0.0.1:3306")
    name = f"opsicle_rel_{secrets.token_hex(4)}"
    _aside(_execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        url = f"{MARIADB_SERVER}/{name}"
        _aside(migrate(url))
        yield url
    finally:
        _aside(_execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}"))


@attrs.define
class Cluster:
    """Two coordinators on one MariaDB and one NATS, and the workers, as real processes."""

    processes: Processes
    nats: NatsServer
    platform: Platform
    listens: list[str]
    org_id: str = ""
    token: tuple[str, str] = ("", "")
    coordinators: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    @property
    def urls(self) -> list[str]:
        return [f"http://{listen}" for listen in self.listens]

    def start_coordinator(self, index: int) -> None:
        name = f"coordinator-{index}-{len(self.processes.procs)}"
        self.coordinators[str(index)] = self.processes.start(
            name,
            "start",
            "coordinator",
            "--listen",
            self.listens[index],
            "--data-dir",
            str(self.processes.data_dir / f"coordinator-{index}"),
            "--lease-seconds",
            str(LEASE_SECONDS),
        )

    def wait_ready(self, index: int) -> None:
        deadline = time.monotonic() + 60
        url = f"{self.urls[index]}/readyz"
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            assert self.coordinators[str(index)].poll() is None, self.processes.logs()
            assert time.monotonic() < deadline, self.processes.logs()
            time.sleep(0.1)

    def kill_coordinator(self, index: int) -> None:
        proc = self.coordinators[str(index)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        args = ["start", "worker"]
        for url in self.urls:
            args += ["--coordinator-url", url]
        args += [
            "--token-id",
            self.token[0],
            "--token",
            self.token[1],
            "--runner",
            "process",
            "--name",
            name,
            "--concurrency",
            str(CONCURRENCY),
            "--drain-seconds",
            "2",
        ]
        proc = self.processes.start(name, *args)
        self.workers[name] = proc
        return proc

    async def queue(self, count: int) -> list[str]:
        p = self.platform
        ids = []
        async with p.uow() as uow:
            for i in range(count):
                now = p.clock.now()
                run, _ = new_run(p.ids.new_id(), SPEC, now, name=f"rel-{i}", org_id=self.org_id)
                await uow.runs.add(run)
                await announce(uow, p.ids, run, now)
                ids.append(run.id)
            await uow.commit()
        return ids

    async def runs(self, ids: list[str]) -> list[Run]:
        return await runs_of(self.platform, ids)

    async def wait_ended(self, ids: list[str], count: int, seconds: float) -> list[Run]:
        return await wait_ended(self.platform, ids, count, seconds, self.processes.logs)

    async def held_by(self, ids: list[str], worker: str) -> list[Run]:
        """Runs in progress on the worker named ``worker``."""
        return [
            r
            for r in await self.runs(ids)
            if r.status is RunStatus.RUNNING and (r.worker_id or "").startswith(f"{worker}-")
        ]

    async def wait_holding(self, ids: list[str], worker: str) -> list[Run]:
        deadline = time.monotonic() + 30
        while not (held := await self.held_by(ids, worker)):
            assert time.monotonic() < deadline, f"{worker} never held a run"
            await asyncio.sleep(0.02)
        return held


@pytest.fixture(scope="module")
def secret_key() -> str:
    """The one secret key of every process on the module's database, as in production."""
    return secrets.token_hex(32)


@pytest.fixture
async def cluster(
    nats: NatsServer,
    database_url: str,
    secret_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cluster]:
    key = secret_key
    env = {
        "OPSICLE_DATABASE_URL": database_url,
        "OPSICLE_NATS_URL": nats.url,
        # A message pulled by a coordinator that dies before acking returns this soon.
        "OPSICLE_NATS_ACK_WAIT_SECONDS": "4",
        # Worker tokens are checked with keyed hashes: every process shares the key.
        "OPSICLE_SECRET_KEY": key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    processes = Processes([sys.executable, "-m", "entrypoints.main"], tmp_path)
    resolved = settings.load(
        None, {**env, "XDG_CONFIG_HOME": str(tmp_path / "config")}, data_dir=str(tmp_path)
    )
    try:
        async with embedded_platform(resolved) as (p, _):
            c = Cluster(processes, nats, p, [f"127.0.0.1:{free_port()}" for _ in range(2)])
            org_id, token_id, secret = await org_with_token(p)
            c.org_id, c.token = org_id, (token_id, secret)
            c.start_coordinator(0)
            c.start_coordinator(1)
            c.wait_ready(0)
            c.wait_ready(1)
            for i in range(WORKERS):
                c.start_worker(f"w{i}")
            yield c
    finally:
        processes.stop_all()


async def test_a_worker_killed_mid_run_loses_no_run(cluster: Cluster) -> None:
    c = cluster
    ids = await c.queue(RUNS_PER_SCENARIO)
    await c.wait_holding(ids, "w0")
    os.killpg(c.workers["w0"].pid, signal.SIGKILL)
    c.workers["w0"].wait()
    held = await c.held_by(ids, "w0")
    await c.wait_ended(ids, len(ids), 90)
    runs = {r.id: r for r in await check_runs(c.platform, ids, c.processes.logs)}
    # Finished by another worker after the lease of the killed one ran out, unless the killed
    # worker's report of its end was already on its way when it was killed: then the run
    # ended once, on w0, and the coordinator had no lease to reclaim.
    taken_over = [runs[r.id] for r in held if runs[r.id].attempts >= 2]
    assert taken_over, "no run of the killed worker was finished by another"
    for run in taken_over:
        assert not (run.worker_id or "").startswith("w0-")
    for run in held:
        if runs[run.id].attempts == 1:
            assert (runs[run.id].worker_id or "").startswith("w0-")


async def test_a_coordinator_killed_mid_claim_loses_no_run(cluster: Cluster) -> None:
    c = cluster
    ids = await c.queue(RUNS_PER_SCENARIO)
    # Runs are flowing: workers hold long-polls and claims on the first coordinator.
    await c.wait_ended(ids, 10, 60)
    c.kill_coordinator(0)
    # The workers fail over to the second coordinator; the first one comes back later.
    await c.wait_ended(ids, len(ids) // 2, 60)
    c.start_coordinator(0)
    c.wait_ready(0)
    c.kill_coordinator(1)
    await c.wait_ended(ids, len(ids), 90)
    await check_runs(c.platform, ids, c.processes.logs)


async def test_runs_flow_on_across_a_nats_restart(cluster: Cluster) -> None:
    c = cluster
    ids = await c.queue(RUNS_PER_SCENARIO)
    await c.wait_ended(ids, 15, 60)
    c.nats.stop()
    more = await c.queue(20)  # committed while NATS is down: the outbox keeps them
    await asyncio.sleep(2)
    c.nats.start()
    ids += more
    await c.wait_ended(ids, len(ids), 120)
    await check_runs(c.platform, ids, c.processes.logs)
    # The runs went through the org's durable consumer on the one stream, and none is left.
    client = await nats_py.connect(c.nats.url)
    try:
        info = await client.jetstream().consumer_info("opsicle-runs", f"opsicle-runs-{c.org_id}")
    finally:
        await client.close()
    assert info.delivered.stream_seq >= len(ids)
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{c.urls[1]}/readyz", timeout=5)
    assert ready.status_code == 200 and "nats" in ready.text, ready.text


async def test_a_worker_frozen_past_its_lease_writes_nothing_after_losing_it(
    cluster: Cluster,
) -> None:
    c = cluster
    ids = await c.queue(RUNS_PER_SCENARIO)
    worker = c.workers["w1"]
    await c.wait_holding(ids, "w1")
    # Stop its heartbeats (the whole process group, phases included) past the lease.
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        held = await c.held_by(ids, "w1")
        deadline = time.monotonic() + 30
        while not all(
            r.status is not RunStatus.RUNNING or r.worker_id != h.worker_id
            for r, h in zip(await c.runs([h.id for h in held]), held, strict=True)
        ):
            assert time.monotonic() < deadline, "the frozen worker's runs were not reclaimed"
            await asyncio.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    await c.wait_ended(ids, len(ids), 90)
    runs = {r.id: r for r in await check_runs(c.platform, ids, c.processes.logs)}
    for run in held:
        # Taken over under a newer fencing token (possibly by the same worker once awake).
        assert runs[run.id].attempts > run.attempts, "the frozen worker's run was not taken over"
    # It noticed on waking up, stopped those runs, and carried on with new ones.
    await asyncio.sleep(1)
    assert worker.poll() is None
    log = (c.processes.data_dir / "w1.log").read_text()
    assert "lease" in log, log
