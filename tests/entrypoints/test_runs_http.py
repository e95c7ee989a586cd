"""Every run route through the SDK over ``httpx.ASGITransport``, on in-memory adapters."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.http.controller_client import ControllerClient
from adapters.http.orgs_client import OrgsClient
from adapters.http.runs_client import RunsClient
from adapters.http.templates_client import TemplatesClient
from adapters.memory.mail import InMemoryMailer
from adapters.memory.queue import InMemoryQueue
from domain.automations import PhaseStatus, RunStatus
from domain.errors import Conflict, Invalid, NotFound, Unauthenticated
from domain.ports import Queue
from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity
from domain.services.platform import Caller, Platform
from domain.services.sessions import open_session
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes
from tests.services.org_support import make_user, unique_code
from tests.services.template_support import simple_text, template_text

Login = Callable[[], Awaitable[tuple[ControllerClient, Caller]]]


@pytest.fixture
def platform() -> tuple[Platform, InMemoryMailer]:
    return memory_platform()


@pytest.fixture
async def login(platform: tuple[Platform, InMemoryMailer]) -> AsyncIterator[Login]:
    p, _ = platform
    app = build_app("controller", controller_routes(p), [])
    clients: list[ControllerClient] = []

    async def make() -> tuple[ControllerClient, Caller]:
        caller = await make_user(p)
        async with p.uow() as uow:
            user = await uow.users.get(caller.user_id or "")
        _, token = await open_session(p, user, caller)
        client = ControllerClient("http://opsicle", token, transport=httpx.ASGITransport(app=app))
        clients.append(client)
        return client, caller

    yield make
    for client in clients:
        await client.aclose()


async def org_with_template(client: ControllerClient, text: str) -> str:
    code = unique_code()
    await OrgsClient(client).create("Acme Operations", code)
    await TemplatesClient(client).submit(text, org=code)
    return code


async def test_create_get_list_and_cancel(login: Login) -> None:
    client, me = await login()
    code = await org_with_template(client, template_text("deploy"))
    runs = RunsClient(client)
    with pytest.raises(Invalid) as bad:
        await runs.create("deploy", code, {"times": "x"})
    assert {"variables.times", "variables.api-token"} <= {e.field for e in bad.value.errors}
    made = await runs.create(
        "deploy", code, {"times": 2, "api-token": "s3cr3t", "who": "Ada"}, comment="release"
    )
    assert made.status is RunStatus.QUEUED and made.template_version == 1
    assert made.variables == {"times": 2, "api-token": "***", "who": "Ada"}
    assert made.comment == "release" and made.requested_by == me.user_id
    assert made.requested_by_email == me.email
    assert [p.status for p in made.phases] == [PhaseStatus.PENDING, PhaseStatus.PENDING]
    assert "no worker of this org has ever been seen" in made.waiting
    got = await runs.get(made.id)
    assert got.id == made.id and got.waiting == made.waiting
    assert got.requested_by_email == me.email
    second = await runs.create("deploy", code, {"times": "1", "api-token": "x"})
    page = await runs.list_runs(org=code, limit=1)
    assert [r.id for r in page.items] == [second.id] and page.next_cursor
    rest = await runs.list_runs(org=code, cursor=page.next_cursor)
    assert [r.id for r in rest.items] == [made.id]
    assert [r.requested_by_email for r in rest.items] == [me.email]
    cancelled = await runs.cancel(made.id, "not today")
    assert cancelled.requested_by_email == me.email
    assert cancelled.status is RunStatus.CANCELLED and cancelled.reason == "not today"
    only = await runs.list_runs(org=code, statuses=["cancelled"], template="deploy")
    assert [r.id for r in only.items] == [made.id]
    mine = await runs.list_runs(requested_by=me.email, since=made.created_at)
    assert len(mine.items) == 2
    assert (await runs.list_runs(org=code, until=made.created_at)).items == []
    with pytest.raises(Conflict):
        await runs.cancel(made.id)
    with pytest.raises(Invalid):
        await runs.list_runs(org=code, statuses=["sleeping"])
    other, _ = await login()
    with pytest.raises(NotFound):
        await RunsClient(other).get(made.id)


async def test_logs_pages_by_offset(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    p, _ = platform
    client, _ = await login()
    code = await org_with_template(client, simple_text("deploy"))
    runs = RunsClient(client)
    made = await runs.create("deploy", code)
    queues: dict[str, Queue] = {}
    d = Dispatch(p.uow, p.clock, p.ids, lambda t: queues.setdefault(t, InMemoryQueue()), p.logs)
    await dispatch.relay_outbox(d)
    assert made.org_id is not None
    worker = WorkerIdentity(made.org_id, "w-9", name="edge")
    lease = await dispatch.claim_next(d, worker, 1)
    assert lease is not None
    assert (await runs.get(made.id)).waiting == "running on worker edge (w-9)"
    lines = "".join(
        json.dumps({"t": "2026-01-01T10:00:00Z", "p": "greet", "s": "stdout", "m": f"line {i}"})
        + "\n"
        for i in range(3)
    )
    await dispatch.append_log(d, worker, made.id, lease.fencing_token, 0, lines.encode())
    first = await runs.logs(made.id, 0, limit=80)
    assert first.data == lines.splitlines(keepends=True)[0] and not first.ended
    rest = await runs.logs(made.id, first.next_offset)
    assert first.data + rest.data == lines and rest.next_offset == len(lines) == rest.size
    await dispatch.complete(d, worker, made.id, lease.fencing_token, RunStatus.FAILED, "exit 3")
    end = await runs.logs(made.id, rest.next_offset)
    assert end.data == "" and end.ended and end.status is RunStatus.FAILED
    with pytest.raises(Invalid):
        await runs.logs(made.id, 0, limit=0)


async def test_run_routes_need_a_session(platform: tuple[Platform, InMemoryMailer]) -> None:
    p, _ = platform
    app = build_app("controller", controller_routes(p), [])
    async with ControllerClient("http://opsicle", transport=httpx.ASGITransport(app=app)) as c:
        with pytest.raises(Unauthenticated):
            await RunsClient(c).list_runs()


class DroppingTransport(httpx.AsyncBaseTransport):
    """Passes requests to ``inner`` but drops every ``every``-th log read, like a flaky link."""

    def __init__(self, inner: httpx.AsyncBaseTransport, every: int) -> None:
        self.inner, self.every = inner, every
        self.log_reads: list[tuple[int, bool]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            offset = int(request.url.params.get("offset", "0"))
            dropped = len(self.log_reads) % self.every == self.every - 1
            self.log_reads.append((offset, dropped))
            if dropped:
                raise httpx.ConnectError("connection reset", request=request)
        return await self.inner.handle_async_request(request)


async def test_following_resumes_at_the_last_offset_after_a_disconnect(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    from rich.console import Console

    from entrypoints.cli.runs import follow_logs

    p, _ = platform
    client, _caller = await login()
    code = await org_with_template(client, simple_text("deploy"))
    made = await RunsClient(client).create("deploy", code)
    queues: dict[str, Queue] = {}
    d = Dispatch(p.uow, p.clock, p.ids, lambda t: queues.setdefault(t, InMemoryQueue()), p.logs)
    await dispatch.relay_outbox(d)
    assert made.org_id is not None
    worker = WorkerIdentity(made.org_id, "w-1")
    lease = await dispatch.claim_next(d, worker, 1)
    assert lease is not None
    app = build_app("controller", controller_routes(p), [])
    flaky = DroppingTransport(httpx.ASGITransport(app=app), every=3)
    shown: list[str] = []
    notes = Console(file=io.StringIO(), force_terminal=False)
    async with ControllerClient("http://opsicle", client.token, transport=flaky) as c:
        following = asyncio.create_task(
            follow_logs(RunsClient(c), made.id, poll_seconds=0.01, out=shown.append, note=notes)
        )
        offset = 0
        for i in range(6):
            data = json.dumps({"t": f"2026-01-01T10:00:0{i}Z", "p": "greet", "m": f"n{i}"})
            offset, _ = await dispatch.append_log(
                d, worker, made.id, lease.fencing_token, offset, (data + "\n").encode()
            )
            await asyncio.sleep(0.05)
        await dispatch.complete(d, worker, made.id, lease.fencing_token, RunStatus.SUCCEEDED)
        status = await asyncio.wait_for(following, 10)
    assert status is RunStatus.SUCCEEDED
    assert [s.split(" ", 1)[1] for s in shown] == [f"[greet] n{i}" for i in range(6)]
    assert any(dropped for _, dropped in flaky.log_reads)
    # Every read after a dropped one asks again from the same offset.
    for (at, dropped), (next_at, _) in zip(flaky.log_reads, flaky.log_reads[1:], strict=False):
        if dropped:
            assert next_at == at
    assert "reconnecting" in notes.file.getvalue()  # type: ignore[attr-defined]
