"""Scaling out with real processes: two controllers, two coordinators and three workers on one
MariaDB, Redis, NATS JetStream (a private server) and MongoDB (the nx-27017 stand-in, or a
real server named by OPSICLE_TEST_MONGODB_URL).

Runs submitted through both controllers spread over every worker; a session made on one
controller works on the other and its logout is immediate there; failed logins are counted
across controllers; a coordinator killed with SIGKILL while runs flow leaves its workers
working through the other; and no run is lost or executed twice.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import yaml

from domain.automations import Run
from domain.services.platform import Platform
from entrypoints import settings
from entrypoints.bootstrap import embedded_platform
from tests.contract.mongo_fixture import mongo_url  # noqa: F401 (a fixture)
from tests.e2e.conftest import (
    OPSICLE,
    PASSWORD,
    TRACED_COMMANDS,
    Processes,
    User,
    check_runs,
    mariadb_database,
    wait_ended,
)
from tests.support import NatsServer, free_port, port_open, require_service

pytestmark = [pytest.mark.e2e, pytest.mark.mariadb]

WORKERS = ("w0", "w1", "w2")
RUNS = 80
LEASE_SECONDS = 5


@attrs.define
class ScaledOut:
    processes: Processes
    platform: Platform
    controllers: list[str]
    coordinators: list[str]
    data_dirs: list[Path]
    procs: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.procs[name] = self.processes.start(name, *args)
        return self.procs[name]

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    async def wait_ended(self, ids: list[str], count: int, seconds: float) -> list[Run]:
        return await wait_ended(self.platform, ids, count, seconds, self.processes.logs)


@pytest.fixture
async def cluster(
    request: pytest.FixtureRequest, nats: NatsServer, tmp_path: Path
) -> AsyncIterator[ScaledOut]:
    require_service("Redis", port_open("127.0.0.1", 6379))
    databases: Iterator[str] = mariadb_database("opsicle_scale")
    database_url = next(databases)
    env = {
        "OPSICLE_LOG_LEVEL": "info",
        "OPSICLE_DATABASE_URL": database_url,
        "OPSICLE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "OPSICLE_REDIS_PREFIX": f"opsicle-scale-{secrets.token_hex(4)}:",
        "OPSICLE_MONGO_URL": request.getfixturevalue("mongo_url"),
        "OPSICLE_MONGO_DATABASE": f"opsicle_scale_{secrets.token_hex(4)}",
        "OPSICLE_NATS_URL": nats.url,
        # A message pulled by a coordinator that dies before acking returns this soon.
        "OPSICLE_NATS_ACK_WAIT_SECONDS": "4",
        # Sessions, token hashes and sealed values: every process shares the key.
        "OPSICLE_SECRET_KEY": secrets.token_hex(32),
    }
    processes = Processes(OPSICLE, tmp_path, env)
    try:
        # The test's own handle on the stores; it migrates the database before any role starts.
        handle = {**env, "XDG_CONFIG_HOME": str(tmp_path / "config"), "OPSICLE_MIGRATE": "true"}
        resolved = settings.load(None, handle, data_dir=str(tmp_path))
        async with embedded_platform(resolved) as (p, _):
            c = ScaledOut(
                processes,
                p,
                [f"http://127.0.0.1:{free_port()}" for _ in range(2)],
                [f"http://127.0.0.1:{free_port()}" for _ in range(2)],
                [tmp_path / f"controller-{i}" for i in range(2)],
            )
            for i, url in enumerate(c.controllers):
                listen = url.removeprefix("http://")
                c.start(f"controller-{i}", "start", "controller", "--listen", listen,
                        "--data-dir", str(c.data_dirs[i]))  # fmt: skip
            for i, url in enumerate(c.coordinators):
                listen = url.removeprefix("http://")
                c.start(f"coordinator-{i}", "start", "coordinator", "--listen", listen,
                        "--data-dir", str(tmp_path / f"coordinator-{i}"),
                        "--lease-seconds", str(LEASE_SECONDS))  # fmt: skip
            for i, url in enumerate(c.controllers):
                processes.wait_ready(url, c.procs[f"controller-{i}"])
            for i, url in enumerate(c.coordinators):
                processes.wait_ready(url, c.procs[f"coordinator-{i}"])
            yield c
    finally:
        processes.stop_all()
        next(databases, None)


def start_workers(c: ScaledOut, token: dict[str, Any]) -> None:
    for name in WORKERS:
        urls = [arg for url in c.coordinators for arg in ("--coordinator-url", url)]
        c.start(name, "start", "worker", *urls, "--token-id", token["id"],
                "--token", token["token"], "--runner", "process", "--name", name,
                "--concurrency", "2", "--drain-seconds", "2")  # fmt: skip


async def submit(c: ScaledOut, token: str, org: str, count: int) -> list[str]:
    """``count`` runs of the traced template, through both controllers in turn."""
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        for i in range(count):
            controller = c.controllers[i % 2]
            body = {"template": "traced", "org": org, "variables": {}, "comment": f"#{i}"}
            reply = await http.post(f"{controller}/api/v1/runs", json=body)
            assert reply.status_code in (200, 201), reply.text
            ids.append(reply.json()["id"])
    return ids


def login(controller: str, email: str, password: str) -> httpx.Response:
    body = {"email": email, "password": password}
    return httpx.post(f"{controller}/api/v1/sessions", json=body, timeout=30)


def me(controller: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{controller}/api/v1/users/me", headers=headers, timeout=30).status_code


def worker_of(run: Run) -> str:
    return (run.worker_id or "").split("-", 1)[0]


async def test_two_of_each_role_share_the_work_the_sessions_and_the_limits(
    cluster: ScaledOut, tmp_path: Path
) -> None:
    c = cluster
    one, two = c.controllers
    ada = User(one, c.data_dirs[0], tmp_path / "ada", f"ada-{secrets.token_hex(3)}@example.com",
               c.processes.env)  # fmt: skip
    ada.sign_up()
    org = f"scale-{secrets.token_hex(3)}"
    ada("create", "org", "Scale-out", "--code", org)
    traced = tmp_path / "traced.yaml"
    phase = {"name": "work", "image": "busybox:latest", "commands": list(TRACED_COMMANDS)}
    traced.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "type": "AutomationTemplate",
                "metadata": {"name": "traced"},
                "spec": {"template": {"phases": [phase]}},
            }
        )
    )
    ada("create", "template", "-f", str(traced), "--org", org)
    token = ada.json("create", "org", "token", "edge", "--org", org)

    # A session made by logging in through controller 1 works on controller 2.
    first = ada.session_token
    assert me(two, first) == 200
    # A second session, made on controller 2, submits the runs.
    second = login(two, ada.email, PASSWORD).json()["sessionToken"]

    start_workers(c, token)
    ids = await submit(c, second, org, RUNS // 2)
    await c.wait_ended(ids, 10, 90)
    # Runs flow: the workers hold claims and long-polls on the first coordinator. Kill it.
    c.kill("coordinator-0")
    killed_at = datetime.now(UTC)
    ids += await submit(c, second, org, RUNS - RUNS // 2)
    await c.wait_ended(ids, len(ids), 180)
    runs = await check_runs(c.platform, ids, c.processes.logs)

    # Every run executed once: its log holds one execution (the phase prints one start line).
    for run in runs:
        data = await c.platform.logs.read(run.id, 0, 1 << 20)
        lines = [json.loads(record)["m"] for record in data.splitlines()]
        assert [line.split()[0] for line in lines] == ["start", "end"], (run, lines)
    # Each by one of the workers; every worker executed some, also after the coordinator died
    # (through the other one), and none of them stopped.
    by_worker = {name: [r for r in runs if worker_of(r) == name] for name in WORKERS}
    assert all(by_worker.values()), {k: len(v) for k, v in by_worker.items()}
    assert sum(len(v) for v in by_worker.values()) == len(ids)
    for name, done in by_worker.items():
        later = [r for r in done if r.started_at is not None and r.started_at > killed_at]
        assert later, f"{name} executed nothing after coordinator 1 died\n{c.processes.logs()}"
        assert c.procs[name].poll() is None, c.processes.log_of(name)
    # Each worker's log reports a run's success at most once, and only the one the run's
    # record names executed it.
    reported: dict[str, list[str]] = {}
    for name in WORKERS:
        for run_id in re.findall(r"run (\w+): succeeded", c.processes.log_of(name)):
            reported.setdefault(run_id, []).append(name)
    assert set(reported) <= set(ids)
    for run in runs:
        assert reported.get(run.id, [worker_of(run)]) == [worker_of(run)], (run, reported)

    # The registry, read through controller 1, knows the three workers.
    registry = ada.json("list", "workers", "--org", org)
    assert sorted(w["name"] for w in registry) == sorted(WORKERS), registry

    # Logout on controller 1 ends the session on controller 2 at once.
    ada("logout")
    assert me(two, first) == 401
    assert me(one, second) == 200

    # Failed logins are counted across both controllers: the eleventh is refused.
    for attempt in range(10):
        reply = login(c.controllers[attempt % 2], ada.email, "wrong-password")
        assert reply.status_code == 401, reply.text
    for controller in c.controllers:
        reply = login(controller, ada.email, PASSWORD)
        assert reply.status_code == 429, reply.text
        assert int(reply.headers["retry-after"]) > 0
