"""MongoDB for the contract suites: ``OPSICLE_TEST_MONGODB_URL``, else the nx-27017 stand-in.

nx-27017 (PyPI) speaks MongoDB's wire protocol over SQLite. It is a stand-in for the machines
that have no MongoDB server: a session starts one on a free loopback port with its data in a
temporary directory and stops it, by its PID, when the session ends. Set
``OPSICLE_TEST_MONGODB_URL`` (e.g. the one from docker-compose.yml) to run the same suites
against a real MongoDB instead.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from tests.support import port_open, require_service

URL_VARIABLE = "OPSICLE_TEST_MONGODB_URL"
START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _answers(url: str) -> str | None:
    """None when a ping succeeds, else why not."""
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        return str(exc)
    finally:
        client.close()
    return None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB server URL for the whole session."""
    real = os.environ.get(URL_VARIABLE)
    if real:
        why = _answers(real)
        require_service("MongoDB", why is None, f"{URL_VARIABLE} does not answer: {why}")
        yield real
        return
    stand_in = StandIn(tmp_path_factory.mktemp("nx-27017"))
    stand_in.start()
    try:
        yield stand_in.url
    finally:
        stand_in.stop()


class StandIn:
    """An nx-27017 server of the caller's own on a fixed free port, with its data in ``data``:
    it can be stopped (by its PID) and started again with what it stored."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers; skip (fail under CI) when it cannot start."""
        log = self.data / "server.log"
        with log.open("ab") as out:
            # The module itself rather than its console script, so the PID is the server's.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "nx_27017.nx_27017", "--host", "127.0.0.1",
                 "--port", str(self.port), "--data-dir", str(self.data / "db"),
                 "--pid-file", str(self.data / "nx-27017.pid"),
                 "--log-file", str(self.data / "nx.log")],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.data)
        why = _wait_until_answering(self.process, self.url, self.port, log)
        require_service("MongoDB stand-in (nx-27017)", why is None, why or "")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None


def _wait_until_answering(process: subprocess.Popen[bytes], url: str, port: int,
                          log: Path) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"nx-27017 exited with {process.returncode}: {_tail(log)}"
        if port_open("127.0.0.1", port, timeout=0.2) and _answers(url) is None:
            return None
        time.sleep(0.1)
    return f"nx-27017 did not answer on port {port} within {START_TIMEOUT:.0f}s: {_tail(log)}"


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no output)"


@pytest.fixture(scope="session")
def mongo_database(mongo_url: str) -> Iterator[str]:
    """A database of the session's own, dropped at the end; tests share it via unique ids."""
    name = f"opsicle_test_{secrets.token_hex(4)}"
    yield name
    client: MongoClient[dict[str, object]] = MongoClient(mongo_url,
                                                         serverSelectionTimeoutMS=5000)
    try:
        client.drop_database(name)
    finally:
        client.close()
