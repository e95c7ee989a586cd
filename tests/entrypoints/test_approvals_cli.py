"""Approval commands against a real controller: org policies, settings, list, get, reject."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
