"""``opsicle list workers`` against a real controller process; the workers are registered
through the Dispatch use cases on the controller's SQLite file, as a coordinator would."""

from __future__ import annotations

import pytest

from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity
from entrypoints.exitcodes import ExitCode
from tests.entrypoints.conftest import CliRunner, RunningController
from tests.entrypoints.test_orgs_cli import data, new_org, ok, signup, with_member
from tests.entrypoints.test_runs_cli import with_store


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def register(controller: RunningController, org_id: str, name: str, busy: int) -> str:
    worker = WorkerIdentity(
        org_id,
        f"{name}-{org_id[-6:].lower()}",
        name=name,
        version="9.8.7",
        labels=(("zone", "eu"), ("gpu", "no")),
    )

    async def seen(d: Dispatch) -> None:
        # A claim that finds nothing registers the worker, as a long-poll does.
        assert await dispatch.claim_next(d, worker, 0, busy=busy) is None

    with_store(controller, seen)
    return worker.worker_id


def test_list_workers_shows_the_registry(
    cli: CliRunner, controller_process: RunningController
) -> None:
    signup(cli, controller_process, "ops")
    code = new_org(cli, "ops")
    org_id = data(cli("get", "org", code, "-o", "json", user="ops"))["id"]
    worker_id = register(controller_process, org_id, "builder", busy=3)

    text = ok(cli("list", "workers", "--org", code, user="ops")).out
    (row,) = [line for line in text.splitlines() if worker_id in line]
    for cell in ("builder", code, "gpu=no,zone=eu", "9.8.7", "ago", "3", "yes"):
        assert cell in row, text

    (listed,) = data(cli("list", "workers", "--org", code, "-o", "json", user="ops"))
    assert (listed["id"], listed["name"], listed["runsInProgress"], listed["online"]) == (
        worker_id,
        "builder",
        3,
        True,
    )
    assert listed["labels"] == {"zone": "eu", "gpu": "no"}
    # Without --org: the workers of every org of the caller.
    everywhere = data(cli("list", "workers", "-o", "json", user="ops"))
    assert worker_id in [w["id"] for w in everywhere]


def test_list_workers_is_refused_without_automations_view(
    cli: CliRunner, controller_process: RunningController
) -> None:
    _, _, code = with_member(cli, controller_process)
    refused = cli("list", "workers", "--org", code, user="bob")
    assert refused.code == ExitCode.FORBIDDEN, refused.out + refused.err
    assert "automations" in refused.err
    missing = cli("list", "workers", "--org", "no-such-org-here", user="bob")
    assert missing.code == ExitCode.NOT_FOUND
