"""Roles at start-up: a store that does not answer is one line naming it and its URL (secrets
masked) and exit code 5; a configured database behind the schema head is refused (exit 11)
unless the role is started with --migrate, which is safe when several roles start at once."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.sql.migrate import current_revision, head_revision
from tests.contract.conftest import MARIADB_SERVER, _execute, run_aside
from tests.e2e.conftest import ROOT
from tests.e2e.test_dispatch_processes import Processes, free_port, processes  # noqa: F401
from tests.support import port_open, require_service

pytestmark = pytest.mark.e2e
SECRET = "s3cret-pw"


def opsicle_fails(opsicle: list[str], tmp_path: Path, *args: str,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opsicle, *args],
        cwd=ROOT,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def server_args(role: str, tmp_path: Path) -> list[str]:
    return ["start", role, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path)]


@pytest.mark.parametrize(
    ("role", "store", "setting", "url"),
    [
        ("controller", "cache", "OPSICLE_REDIS_URL", "redis://:{secret}@127.0.0.1:{port}/0"),
        ("coordinator", "queue", "OPSICLE_NATS_URL", "nats://opsicle:{secret}@127.0.0.1:{port}"),
        ("approver", "audit-database", "OPSICLE_MONGO_URL",
         "mongodb://audit:{secret}@127.0.0.1:{port}/"),
        ("standalone", "database", "OPSICLE_DATABASE_URL",
         "mysql+asyncmy://opsicle:{secret}@127.0.0.1:{port}/opsicle"),
    ],
)
def test_a_role_whose_store_is_closed_says_which_and_exits_5(
    opsicle: list[str], tmp_path: Path, role: str, store: str, setting: str, url: str
) -> None:
    port = free_port()
    result = opsicle_fails(
        opsicle, tmp_path, *server_args(role, tmp_path),
        env={setting: url.format(secret=SECRET, port=port), "OPSICLE_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 5, result.stderr
    masked = url.format(secret="***", port=port)
    assert result.stderr.strip() == (
        f"error: {role} cannot start: {store} at {masked}: connection refused "
        "(nothing listens there)"
    )
    assert SECRET not in result.stdout + result.stderr


def test_a_worker_with_no_coordinator_to_reach_says_so_and_exits_5(
    opsicle: list[str], tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    result = opsicle_fails(
        opsicle, tmp_path, "start", "worker",
        "--coordinator-url", f"http://127.0.0.1:{ports[0]}",
        "--coordinator-url", f"http://user:{SECRET}@127.0.0.1:{ports[1]}",
        "--token-id", "tok_x", "--token", "not-checked",
    )
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip() == (
        f"error: worker cannot start: no coordinator answered: http://127.0.0.1:{ports[0]}: "
        f"connection refused (nothing listens there); http://user:***@127.0.0.1:{ports[1]}: "
        "connection refused (nothing listens there)"
    )


@pytest.fixture
def empty_mariadb() -> Iterator[str]:
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"opsicle_start_{secrets.token_hex(4)}"
    run_aside(_execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    try:
        yield f"{MARIADB_SERVER}/{name}"
    finally:
        run_aside(_execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}"))


@pytest.fixture(params=["sqlite", "mariadb"])
def configured_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database set with database-url: a SQLite file, or a MariaDB database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'configured.db'}"
    url: str = request.getfixturevalue("empty_mariadb")
    return url


def wait_ready(running: Processes, proc: subprocess.Popen[bytes], listen: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"http://{listen}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, running.logs()
        assert time.monotonic() < deadline, running.logs()
        time.sleep(0.2)


def test_a_configured_database_behind_the_head_is_refused_until_started_with_migrate(
    opsicle: list[str],
    tmp_path: Path,
    configured_database: str,
    processes: Processes,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every process on one database shares its secret key, as in production.
    env = {"OPSICLE_DATABASE_URL": configured_database, "OPSICLE_LOG_LEVEL": "warning",
           "OPSICLE_SECRET_KEY": "k" * 64}
    refused = opsicle_fails(opsicle, tmp_path, *server_args("coordinator", tmp_path), env=env)
    assert refused.returncode == 11, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert f"needs {head_revision()}: run 'opsicle run migrations' or start with --migrate" \
        in lines[0]
    assert asyncio.run(current_revision(configured_database)) is None

    # Two roles started at once, both with --migrate: one migrates, the other waits its turn.
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # processes.start passes the environment on
    started = []
    for role in ("controller", "coordinator"):
        listen = f"127.0.0.1:{free_port()}"
        proc = processes.start(role, "start", role, "--listen", listen, "--data-dir",
                               str(tmp_path / role), "--migrate")
        started.append((proc, listen))
    for proc, listen in started:
        wait_ready(processes, proc, listen)
    assert asyncio.run(current_revision(configured_database)) == head_revision()


def test_the_default_embedded_database_is_still_migrated_on_start(
    processes: Processes, tmp_path: Path  # noqa: F811
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    proc = processes.start("standalone", "start", "standalone", "--listen", listen,
                           "--data-dir", str(tmp_path / "data"))
    wait_ready(processes, proc, listen)
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'opsicle.db'}"
    assert asyncio.run(current_revision(url)) == head_revision()
