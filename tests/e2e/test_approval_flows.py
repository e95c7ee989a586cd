"""Approval flows with real processes: a controller, a coordinator and a worker pinned to the
approver's public key, driven through the CLI by three people.

Runs twice: on the embedded SQL store (SQLite shared by the controller and the coordinator)
and on the production stores (MariaDB, Redis, NATS JetStream — a private server — and the
audit log on MongoDB: the nx-27017 stand-in, or a real server named by
OPSICLE_TEST_MONGODB_URL).

A template's new version cannot change what an approved run executes: a run keeps the spec
snapshot and template version it was created with, and its grant binds both. So the test
checks that property (the approved content runs after the template moved on, and a new run
needs its own approval), and that a run whose stored version was rewritten is refused.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import httpx
import pyotp
import pytest
import sqlalchemy as sa

from adapters.sql.engine import create_engine
from domain.grants import SignedGrant, decode_signed, encode_signed
from tests.contract.mongo_fixture import mongo_url  # noqa: F401 (a fixture)
from tests.e2e.conftest import OPSICLE, PASSWORD, Processes, User, mariadb_database
from tests.support import NatsServer, free_port, port_open, require_service

pytestmark = pytest.mark.e2e
T = TypeVar("T")

TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: {name}
spec:
  variables:
    - id: who
      default: world
  approvalPolicy:
    spec:
      approvers: [{approvers}]
      quorum: {quorum}
      requireCode: {code}
      expiresIn: {expires}
  template:
    phases:
      - name: deploy
        image: busybox:latest
        commands:
          - 'echo "{text} $WHO"'
"""


@attrs.frozen
class Stack:
    processes: Processes
    controller: str
    coordinator: str
    data_dir: Path
    database_url: str


@pytest.fixture(params=["embedded", pytest.param("production-stores", marks=pytest.mark.mariadb)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """A controller and a coordinator on one data directory and the same stores."""
    data = tmp_path / "data"
    data.mkdir()
    env = {"OPSICLE_LOG_LEVEL": "info"}
    databases: Iterator[str] | None = None
    database_url = f"sqlite+aiosqlite:///{data / 'opsicle.db'}"
    if request.param == "production-stores":
        require_service("Redis", port_open("127.0.0.1", 6379))
        nats: NatsServer = request.getfixturevalue("nats")
        databases = mariadb_database("opsicle_approvals")
        database_url = next(databases)
        env |= {
            "OPSICLE_DATABASE_URL": database_url,
            "OPSICLE_REDIS_URL": "redis://127.0.0.1:6379/0",
            "OPSICLE_REDIS_PREFIX": f"opsicle-approvals-{secrets.token_hex(4)}:",
            "OPSICLE_MONGO_URL": request.getfixturevalue("mongo_url"),
            "OPSICLE_MONGO_DATABASE": f"opsicle_approvals_{secrets.token_hex(4)}",
            "OPSICLE_NATS_URL": nats.url,
            "OPSICLE_SECRET_KEY": secrets.token_hex(32),
        }
    processes = Processes(OPSICLE, tmp_path, env)
    controller, coordinator = (f"127.0.0.1:{free_port()}" for _ in range(2))
    try:
        # The controller migrates the database; the coordinator, started after it, finds it
        # at the head revision.
        proc = processes.start(
            "controller", "start", "controller", "--listen", controller,
            "--data-dir", str(data), "--migrate",
        )  # fmt: skip
        processes.wait_ready(f"http://{controller}", proc)
        proc = processes.start(
            "coordinator", "start", "coordinator", "--listen", coordinator,
            "--data-dir", str(data), "--lease-seconds", "5",
        )  # fmt: skip
        processes.wait_ready(f"http://{coordinator}", proc)
        yield Stack(processes, f"http://{controller}", f"http://{coordinator}", data, database_url)
    finally:
        processes.stop_all()
        if databases is not None:
            next(databases, None)


# ---------------------------------------------------------------- helpers


def sql(url: str, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the platform database, behind the processes' backs."""

    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text(statement), params)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def template(
    folder: Path,
    name: str,
    approvers: list[str],
    *,
    quorum: int = 1,
    code: bool = False,
    expires: str = "1h",
    text: str = "deployed for",
) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        TEMPLATE.format(
            name=name,
            approvers=", ".join(approvers),
            quorum=quorum,
            code=str(code).lower(),
            expires=expires,
            text=text,
        )
    )
    return path


def api(s: Stack, user: User, path: str) -> Any:
    """GET a controller API path as ``user`` (cheaper than a CLI process for polling)."""
    headers = {"Authorization": f"Bearer {user.session_token}"}
    reply = httpx.get(f"{s.controller}/api/v1{path}", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def wait_run(s: Stack, user: User, run_id: str, done: Any, seconds: float = 60) -> dict[str, Any]:
    """Poll the controller's API as ``user`` until ``done(run)``; fail with every log."""
    deadline = time.monotonic() + seconds
    while True:
        run: dict[str, Any] = api(s, user, f"/runs/{run_id}")
        if done(run):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} stayed {run['status']}\n{s.processes.logs()[-20000:]}")
        time.sleep(0.3)


def ended(run: dict[str, Any]) -> bool:
    return run["status"] in {"succeeded", "failed", "rejected", "expired", "cancelled"}


class Team:
    """The requester (org admin) and two approvers, each at their own terminal."""

    def __init__(self, s: Stack, home: Path) -> None:
        def person(name: str) -> User:
            email = f"{name}-{secrets.token_hex(3)}@example.com"
            # A wide terminal: tables show long reasons on one line.
            env = {**s.processes.env, "COLUMNS": "250"}
            return User(s.controller, s.data_dir, home / name, email, env)

        self.ada, self.grace, self.alan = person("ada"), person("grace"), person("alan")
        self.org = f"appr-{secrets.token_hex(3)}"
        everyone(lambda user: user.sign_up(), [self.ada, self.grace, self.alan])
        self.ada("create", "org", "Approvals", "--code", self.org)

        def join(user: User) -> None:
            self.ada("invite", user.email, "--org", self.org)
            user("join", "org", "--code", user.mailed(r"(join-\S+)"))

        everyone(join, [self.grace, self.alan])
        # Grace answers with TOTP codes from her own MFA enrolment.
        setup = self.grace.json("create", "mfa", "--password", PASSWORD)
        app = pyotp.parse_uri(setup["uri"])
        assert isinstance(app, pyotp.TOTP)
        self.totp = app
        self.grace.json("create", "mfa", "--code", app.now())

    def run(self, name: str, who: str = "e2e") -> dict[str, Any]:
        made: dict[str, Any] = self.ada.json(
            "run", "template", name, "--org", self.org, "--var", f"who={who}"
        )
        return made

    def approval_of(self, run_id: str) -> str:
        return self.pending()[run_id]

    def pending(self) -> dict[str, str]:
        """The org's pending approval requests by run id."""
        items = self.ada.json("list", "approvals", "--org", self.org, "--status", "pending")
        return {a["runId"]: a["id"] for a in items}

    def next_code(self) -> str:
        """A code of the next 30-second step: the one used to confirm the enrolment (this
        step) is spent, and a code is accepted once."""
        return self.totp.at(time.time() + 30)


def everyone(action: Callable[[T], object], items: Iterable[T]) -> None:
    """``action`` on every item at once: people at their own terminals work in parallel."""
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(action, items))


def forge(grant: str) -> str:
    """The stored grant with a later expiry and its original signature."""
    signed = decode_signed(grant)
    later = attrs.evolve(signed.grant, expires_at=signed.grant.expires_at + timedelta(days=30))
    return encode_signed(SignedGrant(later, signed.signature))


# ---------------------------------------------------------------- the flows


def test_approvals_gate_runs_and_the_worker_checks_their_grants(
    stack: Stack, tmp_path: Path
) -> None:
    s = stack
    team = Team(s, tmp_path / "homes")
    ada, grace, alan, org = team.ada, team.grace, team.alan, team.org
    files = tmp_path / "templates"
    files.mkdir()
    paths = [
        template(files, "gated", [grace.email], code=True),
        template(files, "plain", [grace.email, alan.email]),
        template(files, "two-keys", [grace.email, alan.email], quorum=2),
        template(files, "short-lived", [grace.email], expires="1m"),
        template(files, "evolving", [grace.email], text="version one for"),
    ]
    everyone(lambda path: ada("create", "template", "-f", str(path), "--org", org), paths)

    # Made first: its minute runs out while the other flows go on.
    expiring = team.run("short-lived")
    assert expiring["status"] == "pending_approval"
    expiring_approval = team.approval_of(expiring["id"])

    # The worker pins the key 'opsicle get approver-key' prints.
    key = tmp_path / "approver.pem"
    key.write_text(ada("get", "approver-key", "--data-dir", str(s.data_dir)))
    token = ada.json("create", "org", "token", "edge", "--org", org)

    def start_worker(name: str) -> Any:
        return s.processes.start(
            name, "start", "worker", "--coordinator-url", s.coordinator,
            "--token-id", token["id"], "--token", token["token"], "--runner", "process",
            "--name", name, "--approver-key", str(key), "--drain-seconds", "2",
        )  # fmt: skip

    worker = start_worker("worker-1")

    # 1. Asked for, approved with a TOTP code by another person, executed, succeeded.
    gated = team.run("gated")
    assert gated["status"] == "pending_approval", gated
    approval = team.approval_of(gated["id"])
    # The requester cannot approve their own run.
    own = ada.result("approve", approval, "--code", "123456")
    assert own.returncode == 7, own.stderr
    assert "the person who asked for a run cannot approve it" in own.stderr
    # Without a code, this policy is not satisfied.
    no_code = grace.result("approve", approval)
    assert no_code.returncode == 2 and "--code" in no_code.stderr, no_code.stderr
    answered = grace.json("approve", approval, "--code", team.next_code())
    assert answered["status"] == "approved", answered
    done = wait_run(s, ada, gated["id"], ended)
    assert done["status"] == "succeeded", (done, s.processes.logs()[-20000:])
    assert "[deploy] deployed for e2e" in ada("logs", gated["id"])

    # 2. Rejected: ends at once and never executes.
    rejected = team.run("plain")
    grace("reject", team.approval_of(rejected["id"]), "--reason", "not during the freeze")
    shown = ada.json("get", "run", rejected["id"])
    assert shown["status"] == "rejected" and "not during the freeze" in shown["reason"], shown

    # 3. A quorum of two: the same person approving twice counts once.
    pair = team.run("two-keys")
    approval = team.approval_of(pair["id"])
    first = grace.json("approve", approval)
    again = grace.json("approve", approval)
    assert (first["approvals"], first["status"]) == (1, "pending"), first
    assert (again["approvals"], again["status"], again["counted"]) == (1, "pending", False)
    assert ada.json("get", "run", pair["id"])["status"] == "pending_approval"
    assert alan.json("approve", approval)["status"] == "approved"
    done = wait_run(s, ada, pair["id"], ended)
    assert done["status"] == "succeeded", done

    # 4. With the worker stopped, approved runs wait in the queue; some are then tampered with
    # in the database, and the template of another moves on to a new version.
    s.processes.stop(worker)
    waiting = {
        what: team.run("plain", who=what) for what in ("vars", "spec", "version", "grant", "strip")
    }
    evolving = team.run("evolving")
    pending = team.pending()
    everyone(lambda run: grace("approve", pending[run["id"]]), [*waiting.values(), evolving])
    for run in (*waiting.values(), evolving):
        # A claim the stopped worker had waiting may have taken one: its lease runs out and
        # the run is queued again.
        wait_run(s, ada, run["id"], lambda r: r["status"] == "queued")

    def column(run: dict[str, Any], name: str) -> str:
        [(value,)] = sql(s.database_url, f"SELECT {name} FROM runs WHERE id = :id", id=run["id"])
        return str(value)

    def rewrite(run: dict[str, Any], name: str, value: str | None) -> None:
        statement = f"UPDATE runs SET {name} = :value WHERE id = :id"
        sql(s.database_url, statement, value=value, id=run["id"])

    rewrite(waiting["vars"], "variables", json.dumps({"who": "mallory"}))
    rewrite(waiting["spec"], "spec", column(waiting["spec"], "spec").replace("echo", "rm -rf /;"))
    rewrite(waiting["version"], "template_version", "7")
    rewrite(waiting["grant"], "approval_grant", forge(column(waiting["grant"], "approval_grant")))
    rewrite(waiting["strip"], "approval_grant", None)
    evolved = files / "evolving.yaml"
    evolved.write_text(evolved.read_text().replace("version one for", "version two for"))
    ada("create", "template", "-f", str(evolved), "--org", org)
    ada("update", "template", "version", "evolving", "--version", "2", "--org", org)

    start_worker("worker-2")
    reasons = {
        "vars": "grant does not match: variables hash differs",
        "spec": "grant does not match: content hash differs",
        "version": "grant does not match: template version differs (approved 1, about to run 7)",
        "grant": "the signature does not verify: the grant was altered",
        "strip": "the run needed approval but carries no approval grant",
    }
    for what, run in waiting.items():
        done = wait_run(s, ada, run["id"], ended)
        assert done["status"] == "failed", (what, done)
        assert reasons[what] in done["reason"], (what, done)
        # The reason is what 'opsicle get run' shows.
        assert reasons[what] in ada("get", "run", run["id"])
        assert api(s, ada, f"/runs/{run['id']}/logs")["data"] == "", (what, "executed")

    # The approved snapshot runs, not the template's new default version...
    done = wait_run(s, ada, evolving["id"], ended)
    assert (done["status"], done["templateVersion"]) == ("succeeded", 1), done
    assert "[deploy] version one for e2e" in ada("logs", evolving["id"])
    # ...which needs an approval of its own.
    newer = team.run("evolving")
    assert (newer["status"], newer["templateVersion"]) == ("pending_approval", 2), newer

    # The rejected run was never handed to a worker.
    shown = ada.json("get", "run", rejected["id"])
    assert (shown["status"], shown["attempts"], shown.get("workerId")) == ("rejected", 0, None)
    assert ada("logs", rejected["id"]).strip() == ""

    # 5. Nobody answered in time: expired (the coordinator expires requests).
    done = wait_run(s, ada, expiring["id"], ended, seconds=120)
    assert done["status"] == "expired", done
    late = grace.result("approve", expiring_approval)
    assert late.returncode == 9 and "expired" in late.stderr, late.stderr

    # 6. All of it is in the org's audit trail.
    trail = ada.json("list", "audit-logs", "--org", org, "--limit", "1000")["items"]
    seen = {(e["verb"], e["outcome"]) for e in trail}
    assert {
        ("run.create", "success"),
        ("approval.request", "success"),
        ("approval.respond", "success"),
        ("approval.respond", "failure"),
        ("approval.approved", "success"),
        ("approval.rejected", "success"),
        ("approval.expired", "success"),
    } <= seen, seen
    refused = [e for e in trail if e["verb"] == "approval.respond" and e["outcome"] == "failure"]
    assert any(e["data"].get("reason") == "approval_own_request" for e in refused), refused
    # The refused runs too: each failed run is recorded with the worker's reason.
    failed = {e["resourceId"]: e for e in trail if e["verb"] == "run.failed"}
    for what, run in waiting.items():
        event = failed.get(run["id"])
        assert event is not None, (what, sorted(failed))
        assert reasons[what] in event["data"]["reason"], (what, event)
        assert event["outcome"] == "failure" and event["actor"].startswith("worker:"), event
