"""`opsicle run` as a user runs it: every example with each runner, exit codes, no leftovers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, docker_host, sleepers
from tests.support import require_service

EXAMPLES = ROOT / "examples"
EXPECTED = {
    "hello.yaml": (0, ["[greet] hello, world (1/2)", "[shout] (not shouting)", "run succeeded"]),
    "shared-data.yaml": (0, ["[consume] produced at 20", "[consume] report from "]),
    "fails-in-phase-2.yaml": (
        3,
        ["[break] about to fail", "phase 'break' failed with exit code 3", "run failed"],
    ),
    "timeout.yaml": (4, ["phase 'too-slow' timed out after 2 s", "run timed_out"]),
    "secret.yaml": (0, ["calling https://api.example.invalid with token ***"]),
}


def run_args(runner: str) -> list[str]:
    if runner == "docker":
        host = docker_host()
        require_service("Docker engine", host is not None, "run .ci/docker-up")
        return ["--runner", "docker", "--docker-host", str(host)]
    return ["--runner", "process"]


@pytest.mark.e2e
@pytest.mark.parametrize("runner", ["process", pytest.param("docker", marks=pytest.mark.docker)])
@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_every_example_runs(opsicle: list[str], runner: str, example: str) -> None:
    code, lines = EXPECTED[example]
    result = subprocess.run(
        [
            *opsicle,
            "run",
            str(EXAMPLES / example),
            *run_args(runner),
            "--var",
            "api-token=hunter2-hunter2",
        ]
        if example == "secret.yaml"
        else [*opsicle, "run", str(EXAMPLES / example), *run_args(runner)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
    for line in lines:
        assert line in result.stdout, result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    assert f"runner: {runner}" in result.stderr


def long_runbook(tmp_path: Path, seconds: int, timeout: int) -> Path:
    path = tmp_path / "long.yaml"
    path.write_text(f"""\
apiVersion: v1
type: Automation
metadata: {{name: long}}
spec:
  phases:
    - name: wait
      image: busybox:latest
      timeout: {timeout}
      commands:
        - 'trap "" TERM; sleep {seconds} & sleep {seconds + 1} & echo started; wait'
""")
    return path


@pytest.mark.e2e
@pytest.mark.parametrize("runner", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_ctrl_c_cancels_and_leaves_no_process(
    opsicle: list[str], runner: str, tmp_path: Path
) -> None:
    seconds = random.randint(100_000, 999_999)
    runbook = long_runbook(tmp_path, seconds, timeout=600)
    proc = subprocess.Popen(
        [*opsicle, "run", str(runbook), *run_args(runner)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OPSICLE_GRACE_SECONDS": "1"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "started" in line:
                break
        assert sleepers(f"sleep {seconds}"), "the phase's processes should be running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "run cancelled" in out
    deadline = time.monotonic() + 10
    while sleepers(f"sleep {seconds}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not sleepers(f"sleep {seconds}"), "a process of the cancelled phase survived"


@pytest.mark.e2e
@pytest.mark.parametrize("runner", ["process", pytest.param("docker", marks=pytest.mark.docker)])
def test_timeout_leaves_no_process(opsicle: list[str], runner: str, tmp_path: Path) -> None:
    seconds = random.randint(100_000, 999_999)
    runbook = long_runbook(tmp_path, seconds, timeout=2)
    result = subprocess.run(
        [*opsicle, "run", str(runbook), *run_args(runner)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert "timed out after 2 s" in result.stdout
    assert not sleepers(f"sleep {seconds}"), "a process of the timed-out phase survived"
