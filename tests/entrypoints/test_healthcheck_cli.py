"""``opsicle healthcheck`` against a real controller process: the container health check."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.entrypoints.conftest import CliRunner, RunningController


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_own_role_is_probed_on_loopback_when_it_listens_on_every_address(
    cli: CliRunner, controller_process: RunningController, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = controller_process.url.rpartition(":")[2]
    monkeypatch.setenv("OPSICLE_LISTEN", f"0.0.0.0:{port}")
    result = cli("healthcheck")
    assert result.code == 0, result.err
    assert result.out.strip() == f"http://127.0.0.1:{port}/healthz: 200"
    ready = cli("healthcheck", "--ready", "-o", "json")
    assert ready.code == 0, ready.err
    assert json.loads(ready.out) == [{"url": f"http://127.0.0.1:{port}/readyz", "status": 200}]


def test_a_worker_probes_every_coordinator(
    cli: CliRunner, controller_process: RunningController, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSICLE_COORDINATOR_URL", f"{controller_process.url}/")
    result = cli("healthcheck", "--coordinators")
    assert result.code == 0, result.err
    assert result.out.strip() == f"{controller_process.url}/healthz: 200"
    down = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("OPSICLE_COORDINATOR_URL", f"{controller_process.url},{down}")
    result = cli("healthcheck", "--coordinators")
    assert result.code == 5
    assert f"{down}/healthz did not answer" in result.err


def test_a_role_that_does_not_answer_is_one_line_and_exit_code_5(cli: CliRunner) -> None:
    url = f"http://127.0.0.1:{closed_port()}/healthz"
    result = cli("healthcheck", "--url", url, "--timeout", "2")
    assert result.code == 5
    assert result.err.strip().splitlines() == [
        f"error: {url} did not answer: [Errno 111] Connection refused"
    ]


def test_an_answer_other_than_200_fails_the_check(
    cli: CliRunner, controller_process: RunningController
) -> None:
    result = cli(
        "healthcheck",
        "--url",
        f"{controller_process.url}/healthz",
        "--url",
        f"{controller_process.url}/no-such-page",
    )
    assert result.code == 5
    assert f"{controller_process.url}/no-such-page answered 404" in result.err
    assert "Traceback" not in result.err


def test_a_url_that_is_not_http_is_invalid_input(cli: CliRunner) -> None:
    result = cli("healthcheck", "--url", "ftp://127.0.0.1/healthz")
    assert result.code == 2
    assert "'ftp://127.0.0.1/healthz' is not an http(s) URL" in result.err


def test_a_port_that_answers_something_other_than_http_fails_the_check(cli: CliRunner) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"INFO {}\r\n")  # what a NATS server greets with

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}/healthz"
        result = cli("healthcheck", "--url", url, "--timeout", "5")
        thread.join(timeout=10)
    assert result.code == 5, result.err
    assert result.err.strip().splitlines() == [
        f"error: {url} did not answer in HTTP (BadStatusLine)"
    ]


def test_a_url_that_cannot_be_requested_is_invalid_input(cli: CliRunner) -> None:
    result = cli("healthcheck", "--url", "http://127.0.0.1:port/healthz")
    assert result.code == 2, result.err
    assert result.err.startswith("error: 'http://127.0.0.1:port/healthz' is not a valid URL")


def test_a_worker_without_coordinators_is_told_which_setting_to_give(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSICLE_COORDINATOR_URL", " ")
    result = cli("healthcheck", "--coordinators")
    assert result.code == 2
    assert "OPSICLE_COORDINATOR_URL" in result.err
    assert "--coordinator-url" not in result.err  # healthcheck has no such flag


# What a stand-in server answers on /readyz: status, headers, body.
ANSWERS = {
    "no content": (204, {}, b""),
    "not ok": (200, {"Content-Type": "application/json"},
               b'{"status": "unavailable", "checks": {}}'),
    "not json": (200, {"Content-Type": "text/html"}, b"<html>login</html>"),
    "redirect": (302, {"Location": "/elsewhere"}, b""),
    "ok": (200, {"Content-Type": "application/json"}, b'{"status": "ok", "checks": {}}'),
}


@pytest.fixture
def stand_in() -> Iterator[tuple[int, dict[str, str]]]:
    """A server on loopback whose /readyz answers ``ANSWERS[chosen["answer"]]`` and whose
    /elsewhere answers 200 with the ready body."""
    chosen = {"answer": "ok"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = ANSWERS["ok" if self.path == "/elsewhere"
                                            else chosen["answer"]]
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], chosen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(("answer", "said"), [
    ("no content", "answered 204, not 200"),
    ("not ok", 'answered 200 without "status": "ok": {"status": "unavailable"'),
    ("not json", 'answered 200 without "status": "ok": <html>login</html>'),
    ("redirect", "answered 302"),
])
def test_the_role_is_ready_only_with_200_and_status_ok(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, stand_in: tuple[int, dict[str, str]],
    answer: str, said: str,
) -> None:
    port, chosen = stand_in
    monkeypatch.setenv("OPSICLE_LISTEN", f"127.0.0.1:{port}")
    assert cli("healthcheck", "--ready").code == 0
    chosen["answer"] = answer
    result = cli("healthcheck", "--ready")
    assert result.code == 5
    [line] = result.err.strip().splitlines()
    assert line.startswith(f"error: http://127.0.0.1:{port}/readyz {said}"), line
