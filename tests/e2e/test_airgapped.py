"""The air-gapped worker: with nothing but loopback, a token file, a pinned approver key and a
coordinator URL, it executes a run (README, "Air-gapped install")."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import Popen

import pytest

from adapters.http.schemas.orgs import IssuedSecret
from domain.automations import RunStatus
from domain.resources import AutomationSpec, Phase
from domain.services.platform import Platform
from entrypoints import settings
from entrypoints.bootstrap import embedded_platform
from entrypoints.cli.orgs import write_token_files
from tests.e2e.conftest import ROOT
from tests.e2e.test_dispatch_processes import org_with_token, queue_run, wait_for
from tests.support import require_service

pytestmark = pytest.mark.e2e

# Runs inside a new network namespace: loopback is the only interface there is.
ISLAND = """
set -eu
ip link set lo up
"$@" start coordinator --listen 127.0.0.1:13372 --data-dir "$DATA" &
coordinator=$!
until "$@" healthcheck --url http://127.0.0.1:13372/readyz >/dev/null 2>&1; do
    kill -0 "$coordinator"
    sleep 0.5
done
ip -o link show | grep -v ' lo:' && exit 9
exec "$@" start worker --coordinator-url http://127.0.0.1:13372 --token-file "$TOKEN_FILE" \
    --approver-key "$APPROVER_KEY" --runner process --drain-seconds 2
"""


def can_isolate() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Platform]:
    resolved = settings.load(
        None, {"XDG_CONFIG_HOME": str(tmp_path / "config")}, data_dir=str(tmp_path)
    )
    async with embedded_platform(resolved) as (platform, _):
        yield platform


def approver_key_file(opsicle: list[str], data_dir: Path) -> Path:
    """The approver's key as `opsicle get approver-key > approver.pem` leaves it."""
    printed = subprocess.run(
        [*opsicle, "get", "approver-key", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    path = data_dir / "approver.pem"
    path.write_text(printed.stdout)
    return path


def start_island(opsicle: list[str], data_dir: Path, token_file: Path, key: Path) -> Popen[bytes]:
    """A coordinator and a worker in a network namespace of their own, in one process group."""
    env = {
        **os.environ,
        "DATA": str(data_dir),
        "TOKEN_FILE": str(token_file),
        "APPROVER_KEY": str(key),
        "XDG_CONFIG_HOME": str(data_dir / "config"),
    }
    with (data_dir / "island.log").open("wb") as out:
        return subprocess.Popen(
            ["unshare", "--net", "sh", "-c", ISLAND, "island", *opsicle],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )


def stop_island(island: Popen[bytes]) -> None:
    os.killpg(island.pid, signal.SIGTERM)
    try:
        island.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(island.pid, signal.SIGKILL)
        island.wait()


async def test_a_worker_with_only_loopback_runs_its_orgs_run(
    opsicle: list[str], tmp_path: Path, stores: Platform
) -> None:
    require_service("a network namespace", can_isolate(), "needs root, unshare (util-linux) and ip")
    org_id, token_id, secret = await org_with_token(stores)
    issued = IssuedSecret(id=token_id, org_id=org_id, name="edge-1", token=secret, roles=[])
    [token_file] = [p for p in write_token_files(tmp_path / "token", issued) if p.suffix == ".env"]
    key = approver_key_file(opsicle, tmp_path)
    run = await queue_run(
        stores, org_id, AutomationSpec(phases=(Phase("hello", "busybox", ('echo "hi $WHO"',)),))
    )
    island = start_island(opsicle, tmp_path, token_file, key)
    log = tmp_path / "island.log"
    try:
        ended = await wait_for(
            stores, run.id, 120, lambda r: r.status.terminal or island.poll() is not None
        )
        assert ended.status is RunStatus.SUCCEEDED, (ended.reason, log.read_text())
        assert b'"m": "hi e2e"' in await stores.logs.read(run.id, 0, 1 << 20)
    finally:
        stop_island(island)
    text = log.read_text()
    assert "Traceback" not in text
    # Both of the island's processes run on the servers' event loop.
    assert re.search(r"coordinator serving on \S+ \(event loop: uvloop ", text), text
    assert re.search(r"pulling from \S+ with \d+ slot\(s\) \(event loop: uvloop ", text), text
