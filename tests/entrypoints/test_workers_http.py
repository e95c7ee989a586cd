"""The worker registry route through the SDK over ``httpx.ASGITransport``, in memory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
import pytest

from adapters.http.controller_client import ControllerClient
from adapters.http.orgs_client import OrgsClient
from adapters.http.workers_client import WorkersClient
from adapters.memory.mail import InMemoryMailer
from domain.audit import Outcome
from domain.errors import Forbidden, NotFound
from domain.orgs import MemberType
from domain.ports import AuditFilter
from domain.services.platform import Caller, Platform
from domain.services.sessions import open_session
from domain.workers import Worker
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes
from tests.services.org_support import make_user, unique_code

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


async def seen(p: Platform, org_id: str, name: str, ago: timedelta, busy: int = 0) -> Worker:
    worker = Worker(
        id=f"{name}-{p.ids.new_id().lower()}",
        org_id=org_id,
        name=name,
        version="1.2.3",
        last_seen_at=p.clock.now() - ago,
        token_id="tok",
        labels={"zone": "eu", "os": "linux"},
        runs_in_progress=busy,
    )
    async with p.uow() as uow:
        await uow.workers.save(worker)
        await uow.commit()
    return worker


async def test_an_org_lists_its_workers_with_whether_they_are_online(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    p, _ = platform
    admin, _ = await login()
    code, other_code = unique_code(), unique_code()
    org = await OrgsClient(admin).create("Workers Org", code)
    other = await OrgsClient(admin).create("Other Org", other_code)
    busy = await seen(p, org.id, "busy", timedelta(seconds=5), busy=2)
    gone = await seen(p, org.id, "gone", timedelta(minutes=5))
    elsewhere = await seen(p, other.id, "elsewhere", timedelta(seconds=1))

    listed = await WorkersClient(admin).list_workers(code)
    assert [(w.id, w.online, w.runs_in_progress) for w in listed] == [
        (busy.id, True, 2),
        (gone.id, False, 0),
    ]
    first = listed[0]
    assert (first.name, first.version, first.org_code, first.labels, first.token_id) == (
        "busy",
        "1.2.3",
        code,
        {"zone": "eu", "os": "linux"},
        "tok",
    )
    assert first.last_seen_at == busy.last_seen_at
    assert [w.id for w in await WorkersClient(admin).list_workers(org.id)] == [busy.id, gone.id]
    # Without an org: every org of the caller, most recently seen first.
    assert [w.id for w in await WorkersClient(admin).list_workers()] == [
        elsewhere.id,
        busy.id,
        gone.id,
    ]


async def test_listing_workers_needs_membership_and_automations_view(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    p, mailer = platform
    (admin, _), (member, member_user), (outsider, _) = await login(), await login(), await login()
    code = unique_code()
    org = await OrgsClient(admin).create("Private Workers", code)
    await seen(p, org.id, "w", timedelta(seconds=1))
    with pytest.raises(NotFound):
        await WorkersClient(outsider).list_workers(code)
    assert await WorkersClient(outsider).list_workers() == []
    await OrgsClient(admin).invite(code, member_user.email, MemberType.MEMBER)
    match = re.search(r"join code: (\S+)", mailer.to(member_user.email)[-1].text)
    assert match
    await OrgsClient(member).accept(match.group(1))
    # A member without a role that may view automations sees no workers there.
    with pytest.raises(Forbidden):
        await WorkersClient(member).list_workers(code)
    assert await WorkersClient(member).list_workers() == []
    refusals = await p.audit.list(AuditFilter(verb="worker.list", outcome=Outcome.FAILURE))
    assert len(refusals.items) == 2
