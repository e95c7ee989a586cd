"""Cancelling a running run through the CLI: the standalone role's embedded worker stops it at
once, a remote worker whose phase prints at its next log chunk (neither waits for the next
heartbeat); the run says who cancelled it, no process is left."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Processes, User, sleepers
from tests.support import free_port

pytestmark = pytest.mark.e2e
# The heartbeat comes every third of the lease: 100 s here, far beyond the wait below.
LEASE_SECONDS = 300
TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: long-wait
spec:
  template:
    phases:
      - name: wait
        image: busybox:latest
        commands:
          - 'echo waiting'
          - 'sleep {seconds}'
"""
# A phase that prints, as most do: a line every fraction of a second.
TALKER = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: talker
spec:
  template:
    phases:
      - name: talk
        image: busybox:latest
        commands:
          - 'while true; do echo tick; sleep 0.{digits}; done'
"""


@pytest.fixture
def standalone(opsicle: list[str], tmp_path: Path) -> Iterator[tuple[Processes, str]]:
    env = {"OPSICLE_LEASE_SECONDS": str(LEASE_SECONDS), "OPSICLE_RUNNER": "process"}
    processes = Processes(opsicle, tmp_path, env)
    url = f"127.0.0.1:{free_port()}"
    try:
        proc = processes.start(
            "standalone", "start", "standalone", "--listen", url,
            "--data-dir", str(processes.data_dir),
        )  # fmt: skip
        processes.wait_ready(f"http://{url}", proc)
        yield processes, f"http://{url}"
    finally:
        processes.stop_all()


def member_with_template(
    url: str, processes: Processes, tmp_path: Path, template: str
) -> tuple[User, str]:
    """A signed-up user who founded an org holding ``template``; the user and the org code."""
    ada = User(url, processes.data_dir, tmp_path / "ada", f"ada-{uuid.uuid4().hex[:6]}@example.com")
    ada.sign_up()
    org = f"cancel-{uuid.uuid4().hex[:6]}"
    ada("create", "org", "Cancellations", "--code", org)
    path = tmp_path / "template.yaml"
    path.write_text(template)
    ada("create", "template", "-f", str(path), "--org", org)
    return ada, org


def cancel_and_follow(ada: User, run_id: str, phase: str) -> float:
    """Cancel the run, follow its log to the end; the seconds that took. The run must have
    ended cancelled, its reason naming who cancelled it."""
    asked = time.monotonic()
    ada("cancel", run_id)
    follow = ada.result("logs", run_id, "--follow")
    stopped = time.monotonic() - asked
    assert follow.returncode == 130, follow.stderr  # the run ended cancelled
    run = ada.json("get", "run", run_id)
    assert (run["status"], run["reason"]) == (
        "cancelled",
        f"cancelled by {ada.email}: phase '{phase}' was cancelled",
    )
    return stopped


def test_a_cancelled_run_stops_at_once_and_says_who_cancelled_it(
    standalone: tuple[Processes, str], tmp_path: Path
) -> None:
    processes, url = standalone
    # A command line no other test runs (six digits, as theirs: none is a prefix of another).
    seconds = random.randint(100_000, 999_999)
    ada, org = member_with_template(url, processes, tmp_path, TEMPLATE.format(seconds=seconds))

    run_id = ada.json("run", "template", "long-wait", "--org", org)["id"]
    deadline = time.monotonic() + 60
    while "waiting" not in ada("logs", run_id) or not sleepers(f"sleep {seconds}"):
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.2)
    assert ada.json("get", "run", run_id)["status"] == "running"

    stopped = cancel_and_follow(ada, run_id, "wait")
    assert stopped < LEASE_SECONDS / 3, f"stopped after {stopped:.1f} s: at a heartbeat"
    assert [p["status"] for p in ada.json("get", "run", run_id)["phases"]] == ["cancelled"]
    assert not sleepers(f"sleep {seconds}"), "a process of the cancelled phase survived"


@pytest.fixture
def roles(opsicle: list[str], tmp_path: Path) -> Iterator[tuple[Processes, str, str]]:
    """A controller and a coordinator on one data directory; workers come from the test."""
    processes = Processes(opsicle, tmp_path, {"OPSICLE_RUNNER": "process"})
    controller, coordinator = (f"127.0.0.1:{free_port()}" for _ in range(2))
    try:
        proc = processes.start(
            "controller", "start", "controller", "--listen", controller,
            "--data-dir", str(processes.data_dir), "--migrate",
        )  # fmt: skip
        processes.wait_ready(f"http://{controller}", proc)
        proc = processes.start(
            "coordinator", "start", "coordinator", "--listen", coordinator,
            "--data-dir", str(processes.data_dir), "--lease-seconds", str(LEASE_SECONDS),
        )  # fmt: skip
        processes.wait_ready(f"http://{coordinator}", proc)
        yield processes, f"http://{controller}", f"http://{coordinator}"
    finally:
        processes.stop_all()


def test_a_remote_worker_stops_a_phase_that_prints_at_its_next_log_chunk(
    roles: tuple[Processes, str, str], tmp_path: Path
) -> None:
    processes, controller, coordinator = roles
    digits = random.randint(100_000, 999_999)
    ada, org = member_with_template(controller, processes, tmp_path, TALKER.format(digits=digits))
    token = ada.json("create", "org", "token", "edge", "--org", org)
    processes.start(
        "worker", "start", "worker", "--coordinator-url", coordinator,
        "--token-id", token["id"], "--token", token["token"], "--runner", "process",
    )  # fmt: skip

    run_id = ada.json("run", "template", "talker", "--org", org)["id"]
    deadline = time.monotonic() + 60
    while ada("logs", run_id).count("tick") < 3:
        assert time.monotonic() < deadline, processes.logs()
        time.sleep(0.2)

    stopped = cancel_and_follow(ada, run_id, "talk")
    # Its heartbeat would come after 100 s; a log chunk goes out every half second.
    assert stopped < 10, f"stopped after {stopped:.1f} s"
    assert not sleepers(f"sleep 0.{digits}"), "a process of the cancelled phase survived"
