"""The opsicle command as shipped: help, version, validate and the standalone server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from entrypoints.version import VERSION
from tests.e2e.conftest import ROOT
from tests.support import free_port

pytestmark = pytest.mark.e2e


def opsicle_run(
    opsicle: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*opsicle, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env=env,
    )


def test_help_lists_the_commands(opsicle: list[str]) -> None:
    result = opsicle_run(opsicle, "--help")
    assert result.returncode == 0
    for command in ("validate", "run", "start", "explain", "version"):
        assert command in result.stdout


def test_version_and_validate(opsicle: list[str]) -> None:
    version = opsicle_run(opsicle, "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    info = json.loads(version.stdout)
    assert set(info) == {"version", "commit", "buildDate"}
    result = opsicle_run(
        opsicle, "validate", *sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
    )
    assert result.returncode == 0, result.stderr
    broken = opsicle_run(opsicle, "validate", str(ROOT / "README.md"))
    assert broken.returncode == 2
    assert "README.md:" in broken.stderr
    assert "Traceback" not in broken.stderr


def test_frozen_version_names_its_commit_and_build_date(frozen: Path, tmp_path: Path) -> None:
    # An empty cache: this start unpacks the program, as the first start after a download.
    env = {**os.environ, "OPSICLE_CACHE_DIR": str(tmp_path)}
    result = opsicle_run([str(frozen)], "version", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == VERSION
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", info["commit"]), info
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["buildDate"]), info
    [entry] = [p for p in tmp_path.iterdir() if p.is_symlink()]
    assert entry.name.startswith(f"opsicle-{VERSION}-")
    assert (entry / "opsicle").is_file()


def test_frozen_checksum_file_matches(frozen: Path) -> None:
    recorded = (frozen.parent / "opsicle.sha256").read_text().split()
    assert recorded == [hashlib.sha256(frozen.read_bytes()).hexdigest(), "opsicle"]


def test_frozen_completion_script_parses(frozen: Path, tmp_path: Path) -> None:
    result = opsicle_run([str(frozen)], "completion", "bash")
    assert result.returncode == 0, result.stderr
    script = tmp_path / "opsicle.bash"
    script.write_text(result.stdout)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=60)
    assert "complete -F _opsicle opsicle" in result.stdout


def test_standalone_serves_probes_and_stops_on_sigterm(opsicle: list[str], tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [*opsicle, "start", "standalone", "--listen", listen, "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://{listen}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "the standalone role did not answer"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        ready = httpx.get(f"http://{listen}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert "opsicle_http_requests_total" in httpx.get(f"http://{listen}/metrics").text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "(event loop: uvloop " in err, err


def test_a_taken_port_is_one_clear_line(opsicle: list[str], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [
                *opsicle,
                "start",
                "standalone",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    assert result.returncode == 5, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
