"""``opsicle link telegram|slack`` against a real controller process."""

from __future__ import annotations

import json

from entrypoints.exitcodes import ExitCode
from tests.entrypoints.conftest import CliRunner, RunningController
from tests.entrypoints.test_accounts_cli import signed_up


def test_link_prints_a_single_use_code_and_how_to_send_it(
    cli: CliRunner, controller_process: RunningController
) -> None:
    signed_up(cli, controller_process)
    text = cli("link", "telegram")
    assert text.code == 0, text.err
    assert "send /link " in text.out and "works once" in text.out
    data = cli("link", "slack", "-o", "json")
    assert data.code == 0, data.err
    issued = json.loads(data.out)
    assert issued["platform"] == "slack" and len(issued["code"]) == 16
    assert issued["instructions"] == f"type /opsicle link {issued['code']} in Slack"


def test_link_needs_a_session(cli: CliRunner, controller_process: RunningController) -> None:
    cli("logout")
    result = cli("link", "telegram")
    assert result.code == ExitCode.UNAUTHENTICATED, result.err
