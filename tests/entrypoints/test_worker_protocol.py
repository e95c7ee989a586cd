"""The worker ⇄ coordinator protocol in one process: the worker API over httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import attrs
import httpx
import pytest

from adapters.http.coordinator_client import HttpCoordinatorClient
from adapters.http.schemas.worker import MAX_LABEL, MAX_LABELS, WORKER_LABELS_HEADER
from adapters.memory.clock import FakeClock
from adapters.memory.queue import InMemoryQueue
from adapters.memory.runner import InMemoryRunner, Script
from adapters.system import SystemClock
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus, new_run, request_cancel
from domain.errors import Conflict, NotFound, Unauthenticated
from domain.orgs import Organisation
from domain.ports import Queue
from domain.resources import AutomationSpec, Phase
from domain.services.handover import seal_secrets
from domain.services.platform import Platform
from domain.tokens import WorkerToken
from entrypoints.bootstrap import Coordination, coordination, memory_platform
from entrypoints.http.coordinator import create_app
from entrypoints.http.routes import worker_api
from entrypoints.worker import PullWorker, WorkerOptions

BASE = "http://coordinator"
SPEC = AutomationSpec(phases=(Phase("one", "busybox", ("echo hi",)),))


@attrs.frozen
class Stack:
    p: Platform
    c: Coordination
    app: object
    clock: FakeClock
    tokens: dict[str, tuple[str, str]]  # org -> (token id, secret)

    def client(self, org: str = "org-a", worker_id: str = "w1") -> HttpCoordinatorClient:
        token_id, secret = self.tokens[org]
        return HttpCoordinatorClient(
            [BASE],
            token_id,
            secret,
            worker_id=worker_id,
            name=worker_id,
            version="test",
            labels={"zone": "a"},
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
        )

    def raw(self, org: str = "org-a", worker_id: str = "w1") -> httpx.AsyncClient:
        token_id, secret = self.tokens[org]
        return httpx.AsyncClient(
            base_url=BASE,
            transport=httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
            headers={
                "authorization": f"Bearer {secret}",
                "x-opsicle-token-id": token_id,
                "x-opsicle-worker-id": worker_id,
            },
        )


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = FakeClock()
    p, _ = memory_platform(clock)
    queues: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        return queues.setdefault(topic, InMemoryQueue(ack_wait_seconds=60))

    tokens = {}
    async with p.uow() as uow:
        for org in ("org-a", "org-b"):
            await uow.orgs.add(Organisation(org, f"Org {org}", org, clock.now()))
            secret = p.secrets.new_token()
            token = WorkerToken(f"tok-{org}", org, "worker", p.secrets.hash(secret), clock.now())
            await uow.tokens.add(token)
            tokens[org] = (token.id, secret)
        await uow.commit()
    # The loops pause on real time: the relay must publish while claims are held, and the
    # fake clock (leases) moves only when a test says so.
    async with coordination(p, queue, lease_seconds=30, loop_clock=SystemClock()) as c:
        app = create_app(p, c.dispatch, [], c.stopping)
        yield Stack(p, c, app, clock, tokens)


async def queue_run(s: Stack, org: str = "org-a", spec: AutomationSpec = SPEC) -> Run:
    from domain.services.dispatch import announce

    run, _ = new_run(
        s.p.ids.new_id(),
        spec,
        s.clock.now(),
        name="hello",
        org_id=org,
        variables={"region": "eu", "password": "***"},
        sealed_secrets=seal_secrets(s.p.sealer, {"password": "hunter2"}),
    )
    async with s.p.uow() as uow:
        await uow.runs.add(run)
        await announce(uow, s.p.ids, run, s.clock.now())
        await uow.commit()
    return run


async def revoke(s: Stack, token_id: str) -> None:
    async with s.p.uow() as uow:
        token = await uow.tokens.get(token_id)
        await uow.tokens.update(attrs.evolve(token, revoked_at=s.clock.now()))
        await uow.commit()


async def stored(s: Stack, run_id: str) -> Run:
    async with s.p.uow() as uow:
        return await uow.runs.get(run_id)


async def test_a_held_claim_is_answered_the_moment_a_run_is_queued(stack: Stack) -> None:
    client = stack.client()
    waiting = asyncio.create_task(client.claim(20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    run = await queue_run(stack)
    claim = await asyncio.wait_for(waiting, 5)
    assert claim is not None and claim.run.id == run.id
    assert claim.fencing_token == 1 and claim.lease_seconds == 30
    assert claim.heartbeat_seconds == pytest.approx(10)
    assert claim.env == {"REGION": "eu", "PASSWORD": "hunter2"}
    assert claim.secret_env == ("PASSWORD",)
    assert claim.run.spec == SPEC
    held = await stored(stack, run.id)
    assert held.status is RunStatus.RUNNING and held.worker_id == "w1"
    async with stack.p.uow() as uow:
        worker = await uow.workers.get("w1")
    assert worker.org_id == "org-a" and dict(worker.labels) == {"zone": "a"}
    await client.aclose()


async def test_an_empty_long_poll_says_when_to_come_back(stack: Stack) -> None:
    async with stack.raw() as raw:
        reply = await raw.post("/api/v1/worker/claim", json={"wait": 0.2})
        assert reply.status_code == 204
        assert reply.headers["retry-after"] == "1"
        reply = await raw.post("/api/v1/worker/claim", json={"wait": 1})
        assert reply.status_code == 204
        assert reply.headers["retry-after"] == "0"
        stack.c.stopping.set()
        reply = await raw.post("/api/v1/worker/claim", json={"wait": 30})
        assert reply.status_code == 204 and int(reply.headers["retry-after"]) >= 1


async def test_writes_need_the_current_fencing_token(stack: Stack) -> None:
    run = await queue_run(stack)
    client = stack.client()
    claim = await client.claim(5)
    assert claim is not None
    stale = attrs.evolve(claim, fencing_token=claim.fencing_token + 1)
    with pytest.raises(Conflict):
        await client.heartbeat(stale)
    with pytest.raises(Conflict):
        await client.send_log(stale, 0, b"x\n")
    with pytest.raises(Conflict):
        await client.complete(stale, RunStatus.SUCCEEDED)
    async with stack.raw(worker_id="w2") as other:
        reply = await other.post(
            f"/api/v1/worker/runs/{run.id}/heartbeat", json={"fencingToken": 1}
        )
        assert reply.status_code == 409 and reply.json()["code"] == "lease_lost"
    started = PhaseResult("one", PhaseStatus.RUNNING, started_at=stack.clock.now())
    await client.report_phase(claim, started)
    assert (await stored(stack, run.id)).phases[0].status is PhaseStatus.RUNNING
    assert await client.heartbeat(claim) is True
    await client.report_phase(claim, PhaseResult("one", PhaseStatus.SUCCEEDED, 0))
    await client.complete(claim, RunStatus.SUCCEEDED)
    await client.complete(claim, RunStatus.SUCCEEDED)  # a retried completion is fine
    ended = await stored(stack, run.id)
    assert ended.status is RunStatus.SUCCEEDED and ended.phases[0].exit_code == 0
    with pytest.raises(Conflict):
        await client.heartbeat(claim)
    await client.aclose()


async def test_a_completion_records_the_phase_results_it_carries(stack: Stack) -> None:
    run = await queue_run(stack)
    client = stack.client()
    claim = await client.claim(5)
    assert claim is not None
    started = stack.clock.now()
    finished = PhaseResult("one", PhaseStatus.SUCCEEDED, 0, started, stack.clock.now())
    stale = attrs.evolve(claim, fencing_token=claim.fencing_token + 1)
    with pytest.raises(Conflict):
        await client.complete(stale, RunStatus.SUCCEEDED, phases=[finished])
    assert (await stored(stack, run.id)).phases[0].status is PhaseStatus.PENDING
    await client.complete(claim, RunStatus.SUCCEEDED, phases=[finished])
    ended = await stored(stack, run.id)
    assert ended.status is RunStatus.SUCCEEDED
    assert ended.phases[0] == finished
    await client.aclose()


async def test_log_chunks_are_offset_addressed_and_idempotent(stack: Stack) -> None:
    run = await queue_run(stack)
    client = stack.client()
    claim = await client.claim(5)
    assert claim is not None and claim.log_offset == 0
    await client.send_log(claim, 0, b"one\n")
    await client.send_log(claim, 0, b"one\n")  # resent after a lost reply: stored once
    await client.send_log(claim, 4, b"two\n")
    with pytest.raises(Conflict):
        await client.send_log(claim, 100, b"gap\n")
    assert await stack.p.logs.read(run.id) == b"one\ntwo\n"
    # A second attempt continues the log where the first one stopped.
    await client.release(claim)
    await stack.c.dispatch.queues(f"runs.{run.org_id}").depth()
    again = await client.claim(5)
    assert again is not None and again.fencing_token == 2 and again.log_offset == 8
    await client.aclose()


async def test_cancellation_reaches_the_worker_at_its_heartbeat(stack: Stack) -> None:
    run = await queue_run(stack)
    client = stack.client()
    claim = await client.claim(5)
    assert claim is not None
    assert await client.heartbeat(claim) is True
    assert await client.send_log(claim, 0, b"one\n") is True
    async with stack.p.uow() as uow:
        current = await uow.runs.get(run.id)
        cancelled, _ = request_cancel(current, stack.clock.now())
        await uow.runs.update(cancelled)
        await uow.commit()
    assert await client.heartbeat(claim) is False
    # And in the reply to a chunk of output, which a phase that prints sends sooner.
    assert await client.send_log(claim, 4, b"two\n") is False
    await client.complete(claim, RunStatus.CANCELLED, "cancelled")
    assert (await stored(stack, run.id)).status is RunStatus.CANCELLED
    await client.aclose()


async def test_a_revoked_or_rotated_token_is_refused_at_its_next_request(stack: Stack) -> None:
    client = stack.client()
    assert await client.claim(0.05) is None
    await revoke(stack, "tok-org-a")
    with pytest.raises(Unauthenticated):
        await client.claim(0.05)
    async with stack.raw(org="org-b") as raw:
        wrong = await raw.post(
            "/api/v1/worker/claim", json={"wait": 0}, headers={"authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and wrong.json()["code"] == "token_invalid"
        no_worker = await raw.post(
            "/api/v1/worker/claim", json={"wait": 0}, headers={"x-opsicle-worker-id": ""}
        )
        assert no_worker.status_code == 422
    await client.aclose()


async def test_a_claim_held_by_a_revoked_token_takes_no_run(stack: Stack) -> None:
    client = stack.client()
    waiting = asyncio.create_task(client.claim(20))
    await asyncio.sleep(0.3)
    await revoke(stack, "tok-org-a")
    run = await queue_run(stack)
    with pytest.raises(Unauthenticated):
        await asyncio.wait_for(waiting, 5)
    assert (await stored(stack, run.id)).status is RunStatus.QUEUED
    # Its message went back: a worker with a valid token of the org gets the run.
    stack.tokens["org-a"] = await new_token(stack, "org-a")
    other = stack.client(worker_id="w2")
    claim = await other.claim(5)
    assert claim is not None and claim.run.id == run.id and claim.fencing_token == 1
    await asyncio.gather(client.aclose(), other.aclose())


async def test_a_held_claim_hears_of_its_revoked_token_between_slices(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_api, "CLAIM_SLICE_SECONDS", 0.2)
    client = stack.client()
    waiting = asyncio.create_task(client.claim(20))
    await asyncio.sleep(0.1)
    await revoke(stack, "tok-org-a")
    # No run comes: the claim ends at the next slice, long before its 20 s are up.
    with pytest.raises(Unauthenticated):
        await asyncio.wait_for(waiting, 5)
    await client.aclose()


async def test_a_claim_whose_worker_went_away_takes_no_run(stack: Stack) -> None:
    token_id, secret = stack.tokens["org-a"]
    headers = [
        (b"authorization", f"Bearer {secret}".encode()),
        (b"x-opsicle-token-id", token_id.encode()),
        (b"x-opsicle-worker-id", b"gone"),
        (b"content-type", b"application/json"),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/worker/claim", "raw_path": b"/api/v1/worker/claim",
        "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("coordinator", 80),
    }  # fmt: skip
    left = asyncio.Event()
    messages = [{"type": "http.request", "body": b'{"wait": 20}', "more_body": False}]

    async def receive() -> dict[str, object]:
        if messages:
            return messages.pop(0)
        await left.wait()  # the worker hangs up, as a stopped worker's connection does
        return {"type": "http.disconnect"}

    answers: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        answers.append(message)

    held = asyncio.create_task(stack.app(scope, receive, send))  # type: ignore[operator]
    await asyncio.sleep(0.3)
    left.set()
    run = await queue_run(stack)
    await asyncio.wait_for(held, 5)
    assert answers[0]["status"] == 204
    assert (await stored(stack, run.id)).status is RunStatus.QUEUED
    async with stack.raw(worker_id="w2") as raw:
        reply = await raw.post("/api/v1/worker/claim", json={"wait": 5})
    assert reply.status_code == 200 and reply.json()["runId"] == run.id


async def test_a_worker_gives_a_few_short_labels(stack: Stack) -> None:
    many = ",".join(f"k{i}=v" for i in range(MAX_LABELS + 1))
    long = f"zone={'a' * MAX_LABEL}"
    async with stack.raw() as raw:
        for labels, why in ((many, f"at most {MAX_LABELS}"), (long, "characters per k=v")):
            reply = await raw.post(
                "/api/v1/worker/claim", json={"wait": 0}, headers={WORKER_LABELS_HEADER: labels}
            )
            assert reply.status_code == 422 and why in reply.json()["errors"]["labels"]
        fine = await raw.post(
            "/api/v1/worker/claim", json={"wait": 0}, headers={WORKER_LABELS_HEADER: "zone=a"}
        )
        assert fine.status_code == 204


async def new_token(s: Stack, org: str) -> tuple[str, str]:
    secret = s.p.secrets.new_token()
    token = WorkerToken(s.p.ids.new_id(), org, "worker-2", s.p.secrets.hash(secret), s.clock.now())
    async with s.p.uow() as uow:
        await uow.tokens.add(token)
        await uow.commit()
    return token.id, secret


async def test_a_run_of_one_org_never_reaches_a_worker_of_another(stack: Stack) -> None:
    run = await queue_run(stack, org="org-b")
    worker_a = stack.client("org-a", "wa")
    worker_b = stack.client("org-b", "wb")
    assert await worker_a.claim(0.5) is None
    claim = await worker_b.claim(5)
    assert claim is not None and claim.run.id == run.id
    # Even knowing the run id and its token, org A's worker cannot touch it.
    with pytest.raises(NotFound):
        await worker_a.heartbeat(attrs.evolve(claim))
    async with stack.raw(org="org-a", worker_id="wb") as raw:
        reply = await raw.put(
            f"/api/v1/worker/runs/{run.id}/logs",
            params={"offset": 0, "fencingToken": 1},
            content=b"x",
        )
        assert reply.status_code == 404
    await worker_a.aclose()
    await worker_b.aclose()


async def test_a_worker_executes_a_run_over_http(stack: Stack) -> None:
    spec = AutomationSpec(
        phases=(Phase("greet", "busybox", ("true",)), Phase("fail", "busybox", ("false",)))
    )
    run = await queue_run(stack, spec=spec)
    runner = InMemoryRunner(
        {
            "greet": Script(lines=("hello from {REGION}", "secret {PASSWORD}")),
            "fail": Script(exit_code=3),
        }
    )

    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    client = stack.client()
    worker = PullWorker(client, runner_for, stack.clock, WorkerOptions(claim_wait=1))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        if (await stored(stack, run.id)).status.terminal:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    ended = await stored(stack, run.id)
    assert ended.status is RunStatus.FAILED
    assert [(p.status, p.exit_code) for p in ended.phases] == [
        (PhaseStatus.SUCCEEDED, 0),
        (PhaseStatus.FAILED, 3),
    ]
    lines = [json.loads(line) for line in (await stack.p.logs.read(run.id)).splitlines()]
    assert [(r["p"], r["s"], r["m"]) for r in lines] == [
        ("greet", "stdout", "hello from eu"),
        ("greet", "stdout", "secret ***"),
    ]
    await client.aclose()
