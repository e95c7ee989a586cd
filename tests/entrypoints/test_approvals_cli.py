"""Approval commands against a real controller: org policies, settings, list, get, reject."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.entrypoints.conftest import CliResult, CliRunner, RunningController
from tests.entrypoints.test_orgs_cli import ok, with_member

POLICY = """\
apiVersion: v1
type: ApprovalPolicy
metadata: {name: two-eyes}
spec:
  inApp: true
  quorum: 1
  expiresIn: 1h
"""
TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata: {name: guarded}
spec:
  approvalPolicy: {policyRef: two-eyes}
  template:
    phases:
      - {name: one, image: busybox:latest, commands: ["echo guarded"]}
"""


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def data(result: CliResult) -> Any:
    return json.loads(ok(result).out)


def test_policies_settings_and_a_rejected_run(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    _, _, org = with_member(cli, controller_process, "admin")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ok(cli("create", "approval-policy", "-f", str(policy), "--org", org, user="admin"))
    names = [
        p["name"]
        for p in data(cli("list", "approval-policies", "--org", org, "-o", "json", user="admin"))
    ]
    assert names == ["two-eyes"]
    policy.write_text(POLICY.replace("quorum: 1", "quorum: 1\n  requireCode: false"))
    ok(cli("update", "approval-policy", "-f", str(policy), "--org", org, user="admin"))
    assert (
        data(cli("get", "approval-policy", "two-eyes", "--org", org, "-o", "json", user="admin"))[
            "name"
        ]
        == "two-eyes"
    )
    ok(cli("update", "org", "approvals", "--org", org, "--not-required", user="admin"))

    template = tmp_path / "guarded.yaml"
    template.write_text(TEMPLATE)
    ok(cli("create", "template", "-f", str(template), "--org", org, user="admin"))
    run = data(cli("run", "template", "guarded", "--org", org, "-o", "json", user="admin"))
    assert run["status"] == "pending_approval"

    pending = data(cli("list", "approvals", "--org", org, "-o", "json", user="bob"))
    [request] = [a for a in pending if a["runId"] == run["id"]]
    assert (
        data(cli("get", "approval", request["id"], "-o", "json", user="bob"))["status"] == "pending"
    )
    # The requester can never decide on their own run.
    assert cli("reject", request["id"], "--reason", "mine", user="admin").code == 7
    ok(cli("reject", request["id"], "--reason", "not today", user="bob"))
    after = data(cli("get", "run", run["id"], "-o", "json", user="admin"))
    assert after["status"] == "rejected"
    ok(cli("remove", "approval-policy", "two-eyes", "--org", org, user="admin"))


def rejected_run(cli: CliRunner, org: str, tmp_path: Path) -> dict[str, Any]:
    """Store template 'guarded' (under the org's policy 'two-eyes'), run it as 'admin' and have
    'bob' reject it 'not today'; the approval request as 'bob' listed it."""
    template = tmp_path / "guarded.yaml"
    template.write_text(TEMPLATE)
    ok(cli("create", "template", "-f", str(template), "--org", org, user="admin"))
    run = data(cli("run", "template", "guarded", "--org", org, "-o", "json", user="admin"))
    [request] = [a for a in data(cli("list", "approvals", "--org", org, "-o", "json",
                                     user="bob")) if a["runId"] == run["id"]]
    ok(cli("reject", request["id"], "--reason", "not today", user="bob"))
    return dict(request)


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_policy_webhook_is_masked_and_the_controller_calls_it_back(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    _, bob, org = with_member(cli, controller_process, "admin")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook/{org}"
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY + f"  webhooks:\n    - url: {url.replace('http:', 'htp:')}\n")
        bad = cli("create", "approval-policy", "-f", str(policy), "--org", org, user="admin")
        located = f"{policy}:9:7: spec.webhooks[0].url: expected an https:// URL"
        assert bad.code == 2 and located in bad.err
        policy.write_text(POLICY + f"  webhooks:\n    - url: {url}\n"
                          "      auth: {bearer: {token: tok-cli-secret}}\n")
        ok(cli("create", "approval-policy", "-f", str(policy), "--org", org, user="admin"))
        for fmt in ("json", "yaml", "text"):
            shown = ok(cli("get", "approval-policy", "two-eyes", "--org", org, "-o", fmt,
                           user="admin")).out
            assert "tok-cli-secret" not in shown
        content = data(cli("get", "approval-policy", "two-eyes", "--org", org, "-o", "json",
                           user="admin"))["content"]
        assert "token: '***'" in content
        request = rejected_run(cli, org, tmp_path)
        # The controller's delivery loop polls every few seconds; wait for its POST.
        for _ in range(300):
            if _Hook.received:
                break
            time.sleep(0.1)
        [(headers, body)] = [r for r in _Hook.received if json.loads(r[1])["org"]["code"] == org]
        assert headers["authorization"] == "Bearer tok-cli-secret"
        sent = json.loads(body)
        assert (sent["approvalId"], sent["decision"]) == (request["id"], "rejected")
        assert sent["deciders"][0]["email"] == bob and sent["deciders"][0]["comment"] == "not today"
        expected = "sha256=" + hmac.new(b"tok-cli-secret", body, hashlib.sha256).hexdigest()
        assert headers["opsicle-signature"] == expected
    finally:
        server.shutdown()
        server.server_close()
