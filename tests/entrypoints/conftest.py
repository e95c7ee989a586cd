"""Fixtures for CLI tests: a controller process on loopback and the CLI run in-process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import httpx
import pytest

from adapters.mail.outbox import OutboxEmail, list_outbox
from entrypoints.main import run

ROOT = Path(__file__).parents[2]


@attrs.frozen
class RunningController:
    url: str
    data_dir: Path

    def emails(self, to: str) -> list[OutboxEmail]:
        """Emails the controller sent to ``to``, oldest first (from its file outbox)."""
        return [e for e in list_outbox(self.data_dir / "outbox") if to in e.email.to]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def controller_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningController]:
    """One real controller (embedded stores) for the whole session, stopped by its PID."""
    data_dir = tmp_path_factory.mktemp("controller")
    listen = f"127.0.0.1:{_free_port()}"
    log = (data_dir / "controller.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "entrypoints.main",
            "start",
            "controller",
            "--listen",
            listen,
            "--data-dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://{listen}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (data_dir / "controller.log").read_text()
                    raise RuntimeError(f"the controller did not start:\n{log_text}") from None
                time.sleep(0.1)
        yield RunningController(f"http://{listen}", data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@attrs.frozen
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(
    controller_process: RunningController,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> CliRunner:
    """Run ``opsicle ARGS…`` in-process against the controller, as one user with its own
    config directory (so its session file is its own). Call ``cli.as_user(dir)`` to switch."""
    monkeypatch.setenv("OPSICLE_CONTROLLER_URL", controller_process.url)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("OPSICLE_OUTPUT", raising=False)

    def invoke(*args: str, user: str | None = None, stdin: str | None = None) -> CliResult:
        if user is not None:
            monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / f"config-{user}"))
        if stdin is not None:
            import io

            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = run(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
