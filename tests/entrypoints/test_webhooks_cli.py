"""Webhook delivery commands against a real controller that calls a loopback receiver."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.entrypoints.conftest import CliResult, CliRunner, RunningController
from tests.entrypoints.test_approvals_cli import (  # noqa: F401 (wide_tables: autouse)
    POLICY,
    rejected_run,
    wide_tables,
)
from tests.entrypoints.test_orgs_cli import ok, with_member


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the next scripted status, then 204."""

    script: ClassVar[deque[int]] = deque()
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(self.path)
        self.send_response(self.script.popleft() if self.script else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Scripted.script.clear()
    _Scripted.received.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def data(result: CliResult) -> Any:
    return json.loads(ok(result).out)


def wait_for(cli: CliRunner, org: str, status: str) -> list[dict[str, Any]]:
    """The org's deliveries in ``status`` once there is one (the controller's delivery loop
    polls every few seconds)."""
    for _ in range(300):
        found = data(cli("list", "webhook-deliveries", "--org", org, "--status", status,
                         "-o", "json", user="admin"))["items"]
        if found:
            return list(found)
        time.sleep(0.1)
    raise AssertionError(f"no {status} webhook delivery in {org}")


def test_list_get_and_retry_a_given_up_delivery(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path, receiver: str
) -> None:
    _, _, org = with_member(cli, controller_process, "admin")
    _Scripted.script.append(401)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY + f"  webhooks:\n    - url: {receiver}/hook/{org}?key=q-secret\n"
                      "      auth: {bearer: {token: tok-ops-secret}}\n")
    ok(cli("create", "approval-policy", "-f", str(policy), "--org", org, user="admin"))
    request = rejected_run(cli, org, tmp_path)

    [failed] = wait_for(cli, org, "failed")
    assert (failed["approvalId"], failed["attempts"], failed["lastStatus"]) == (
        request["id"], 1, 401)
    assert failed["url"] == f"{receiver}/hook/{org}" and failed["nextAttemptAt"] is None
    shown = ok(cli("get", "webhook-delivery", failed["id"], "--org", org, user="admin")).out
    assert "failed after 1 of 8 attempt(s) (last answer: HTTP 401)" in shown
    for fmt in ("json", "yaml", "text"):
        out = ok(cli("list", "webhook-deliveries", "--org", org, "--approval", request["id"],
                     "-o", fmt, user="admin")).out
        assert failed["id"] in out
        assert "q-secret" not in out and "tok-ops-secret" not in out
    assert data(cli("list", "webhook-deliveries", "--org", org, "--status", "pending",
                    "-o", "json", user="admin"))["items"] == []

    retried = ok(cli("retry", "webhook-delivery", failed["id"], "--org", org, user="admin"))
    assert "is pending again" in retried.out
    [delivered] = wait_for(cli, org, "delivered")
    assert delivered["id"] == failed["id"] and delivered["attempts"] == 1
    assert len(_Scripted.received) == 2
    refused = cli("retry", "webhook-delivery", failed["id"], "--org", org, user="admin")
    assert refused.code == 9 and "was delivered: there is nothing to retry" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    unknown = cli("get", "webhook-delivery", "nope", "--org", org, user="admin")
    assert unknown.code != 0 and "webhook delivery nope not found" in unknown.err
    audit = data(cli("list", "audit-logs", "--org", org, "-o", "json", user="admin"))
    verbs = [e["verb"] for e in audit["items"]]
    assert {"webhook.failed", "webhook.retried", "webhook.delivered"} <= set(verbs)
