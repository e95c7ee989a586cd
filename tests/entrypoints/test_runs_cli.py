"""The run commands against a real controller process, one test per command; a stand-in
worker writes logs through the Dispatch use cases on the controller's SQLite file."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from adapters.memory.queue import InMemoryQueue
from adapters.sql.engine import create_engine
from adapters.sql.repositories import unit_of_work_factory
from adapters.sql.run_logs import SqlRunLogStore
from adapters.system import SystemClock, UlidIdGenerator
from domain.automations import RunStatus, claim
from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity
from entrypoints.exitcodes import ExitCode
from tests.entrypoints.conftest import CliRunner, RunningController
from tests.entrypoints.test_orgs_cli import data, new_org, ok, signup
from tests.services.template_support import simple_text, template_text

T = TypeVar("T")


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def org_with(cli: CliRunner, controller: RunningController, tmp_path: Path, text: str) -> str:
    """A logged-in user with an org holding the template in ``text``; the org's code."""
    signup(cli, controller, "runner")
    code = new_org(cli, "runner")
    path = tmp_path / "template.yaml"
    path.write_text(text)
    ok(cli("create", "template", "-f", str(path), "--org", code))
    return code


def queued(cli: CliRunner, code: str, name: str = "deploy") -> dict[str, object]:
    made: dict[str, object] = data(cli("run", "template", name, "--org", code, "-o", "json"))
    return made


def with_store(controller: RunningController, action: Callable[[Dispatch], Awaitable[T]]) -> T:
    """Run ``action`` with the coordinator's use cases on the controller's database."""

    async def main() -> T:
        engine = create_engine(f"sqlite+aiosqlite:///{controller.data_dir / 'opsicle.db'}")
        try:
            clock = SystemClock()
            d = Dispatch(
                unit_of_work_factory(engine),
                clock,
                UlidIdGenerator(clock),
                lambda _: InMemoryQueue(),
                SqlRunLogStore(engine),
                lease_seconds=60,
            )
            return await action(d)
        finally:
            await engine.dispose()

    return asyncio.run(main())


async def hold(d: Dispatch, run_id: str) -> tuple[WorkerIdentity, int]:
    """Claim the run as worker 'cli-w' (straight from the store: no queue in this test)."""
    async with d.uow() as uow:
        run = await uow.runs.get(run_id)
        held, _ = claim(run, "cli-w", d.clock.now(), d.lease_seconds)
        await uow.runs.update(held, expected=RunStatus.QUEUED, expected_attempts=run.attempts)
        await uow.commit()
    assert held.org_id is not None
    return WorkerIdentity(held.org_id, "cli-w", name="cli-w"), held.attempts


def line(phase: str, text: str) -> bytes:
    entry = {"t": "2026-01-01T10:11:12Z", "p": phase, "s": "stdout", "m": text}
    return (json.dumps(entry) + "\n").encode()


def test_run_template(
    cli: CliRunner, controller_process: RunningController, tmp_path: Path
) -> None:
    code = org_with(cli, controller_process, tmp_path, template_text("deploy"))
    made = data(
        cli(
            "run",
            "template",
            "deploy",
            "--org",
            code,
            "--var",
            "times=2",
            "--var",
            "api-token=s3cr3t",
            "--comment",
            "release 1",
            "-o",
            "json",
        )
    )
    assert made["status"] == "queued" and made["templateVersion"] == 1
    assert made["variables"] == {"times": 2, "api-token": "***", "who": "world"}
    assert made["comment"] == "release 1"
    text = ok(cli("run", "template", "deploy", "--org", code, "-v", "times=1", "-v", "api-token=x"))
    assert "no worker of this org has ever been seen" in text.out
    missing = cli("run", "template", "deploy", "--org", code, stdin="")
    assert missing.code == ExitCode.INVALID and "variables.api-token" in missing.err
    typed = cli(
        "run", "template", "deploy", "--org", code, "--var", "times=many", "--var", "api-token=x"
    )
    assert typed.code == ExitCode.INVALID and "variables.times" in typed.err
    no_org = cli("run", "template", "deploy")
    assert no_org.code == ExitCode.INVALID and "--org" in no_org.err


def test_run_file_still_runs_locally(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(simple_text("local", echo="here"))
    result = cli("run", str(path), "--runner", "process")
    assert result.code == 0, result.err
    assert "here world" in result.out


def test_get_run(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    code = org_with(cli, controller_process, tmp_path, simple_text("deploy"))
    made = queued(cli, code)
    email = str(made["requestedByEmail"])
    assert email.startswith("runner") and email.endswith("@example.com")
    shown = ok(cli("get", "run", str(made["id"])))
    assert "queued with" in shown.out and "greet" in shown.out and "pending" in shown.out
    # Who asked is shown by email, not by user id.
    assert email in shown.out and str(made["requestedBy"]) not in shown.out
    listed = ok(cli("list", "runs", "--org", code))
    assert email in listed.out and str(made["requestedBy"]) not in listed.out
    assert cli("get", "run", "no-such-run").code == ExitCode.NOT_FOUND
    empty = cli("get", "run", "")
    assert empty.code == ExitCode.INVALID and "a name or id is empty" in empty.err
    signup(cli, controller_process, "stranger")
    assert cli("get", "run", str(made["id"]), user="stranger").code == ExitCode.NOT_FOUND


def test_list_runs(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    code = org_with(cli, controller_process, tmp_path, simple_text("deploy"))
    first, second = queued(cli, code), queued(cli, code)
    ok(cli("cancel", str(first["id"])))
    page = data(cli("list", "runs", "--org", code, "--limit", "1", "-o", "json"))
    assert [r["id"] for r in page["items"]] == [second["id"]] and page["nextCursor"]
    more = data(cli("list", "runs", "--org", code, "--cursor", page["nextCursor"], "-o", "json"))
    assert [r["id"] for r in more["items"]] == [first["id"]]
    cancelled = data(
        cli(
            "list",
            "runs",
            "--org",
            code,
            "--status",
            "cancelled",
            "--template",
            "deploy",
            "-o",
            "json",
        )
    )
    assert [r["id"] for r in cancelled["items"]] == [first["id"]]
    text = ok(cli("list", "runs", "--since", str(first["createdAt"])))
    assert str(second["id"]) in text.out and "queued" in text.out


def test_cancel(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    code = org_with(cli, controller_process, tmp_path, simple_text("deploy"))
    made = queued(cli, code)
    done = ok(cli("cancel", str(made["id"]), "--reason", "wrong day"))
    assert "cancelled" in done.out
    assert data(cli("get", "run", str(made["id"]), "-o", "json"))["reason"] == "wrong day"
    assert cli("cancel", str(made["id"])).code == ExitCode.CONFLICT


def test_logs(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    code = org_with(cli, controller_process, tmp_path, simple_text("deploy"))
    run_id = str(queued(cli, code)["id"])
    chunk = line("greet", "hello one") + line("greet", "hello two")

    async def write(d: Dispatch) -> None:
        worker, token = await hold(d, run_id)
        await dispatch.append_log(d, worker, run_id, token, 0, chunk)
        await dispatch.append_log(d, worker, run_id, token, 0, chunk)  # a resend: stored once

    with_store(controller_process, write)
    shown = ok(cli("logs", run_id))
    lines = shown.out.splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == ["[greet] hello one", "[greet] hello two"]
    assert all(len(ln.split(" ")[0]) == 8 for ln in lines)  # HH:MM:SS
    later = ok(cli("logs", run_id, "--offset", str(len(line("greet", "hello one")))))
    assert later.out.count("hello") == 1 and "hello two" in later.out
    page = data(cli("get", "run", run_id, "-o", "json"))
    assert page["status"] == "running" and page["waiting"] == "running on worker cli-w"


def test_logs_follow(cli: CliRunner, controller_process: RunningController, tmp_path: Path) -> None:
    code = org_with(cli, controller_process, tmp_path, simple_text("deploy"))
    run_id = str(queued(cli, code)["id"])
    held = with_store(controller_process, lambda d: hold(d, run_id))

    def worker() -> None:
        async def work(d: Dispatch) -> None:
            who, token = held
            offset = 0
            for i in range(3):
                await asyncio.sleep(0.4)
                data = line("greet", f"step {i}")
                offset, _ = await dispatch.append_log(d, who, run_id, token, offset, data)
            await dispatch.complete(d, who, run_id, token, RunStatus.FAILED, "exit 3")

        time.sleep(0.2)
        with_store(controller_process, work)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        result = cli("logs", run_id, "--follow")
    finally:
        thread.join()
    assert result.code == ExitCode.PHASE_FAILED, result.err
    assert [ln.split(" ", 1)[1] for ln in result.out.splitlines()] == [
        "[greet] step 0",
        "[greet] step 1",
        "[greet] step 2",
    ]
