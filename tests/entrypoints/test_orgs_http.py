"""Every org route through the SDK over ``httpx.ASGITransport``, on in-memory adapters."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from adapters.http.controller_client import ControllerClient
from adapters.http.orgs_client import OrgsClient
from adapters.http.schemas.orgs import GrantSpec
from adapters.memory.mail import InMemoryMailer
from domain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from domain.orgs import InvitationStatus, MemberType
from domain.permissions import ADMINISTRATOR_ROLE, WORKER_ROLE
from domain.services.platform import Caller, Platform
from domain.services.sessions import open_session
from domain.services.tokens import authenticate_token
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_api, controller_routes
from tests.services.org_support import make_user, unique_code

Login = Callable[[], Awaitable[tuple[OrgsClient, Caller]]]


@pytest.fixture
def platform() -> tuple[Platform, InMemoryMailer]:
    return memory_platform()


@pytest.fixture
async def login(platform: tuple[Platform, InMemoryMailer]) -> AsyncIterator[Login]:
    """Make a user, open a session and give back an SDK client acting as them."""
    p, _ = platform
    app = build_app("controller", controller_routes(p), [])
    clients: list[ControllerClient] = []

    async def make() -> tuple[OrgsClient, Caller]:
        caller = await make_user(p)
        async with p.uow() as uow:
            user = await uow.users.get(caller.user_id or "")
        _, token = await open_session(p, user, caller)
        client = ControllerClient("http://opsicle", token, transport=httpx.ASGITransport(app=app))
        clients.append(client)
        return OrgsClient(client), caller

    yield make
    for client in clients:
        await client.aclose()


def code_for(mailer: InMemoryMailer, email: str) -> str:
    match = re.search(r"join code: (\S+)", mailer.to(email)[-1].text)
    assert match
    return match.group(1)


async def test_orgs_invitations_and_members(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    _, mailer = platform
    (admin, admin_user), (bob, bob_user) = await login(), await login()
    code = unique_code()
    org = await admin.create(name="Acme Operations", code=code)
    assert org.member_type is MemberType.ADMIN
    assert (await admin.get(code)).id == org.id
    assert [o.code for o in await admin.list_orgs()] == [code]
    with pytest.raises(NotFound):
        await bob.get(code)
    with pytest.raises(Conflict):
        await bob.create("Other Name", code)
    with pytest.raises(Invalid) as bad:
        await bob.create("x", "y")
    assert {e.field for e in bad.value.errors} == {"name", "code"}

    sent = await admin.invite(code, bob_user.email, MemberType.OPERATOR)
    assert [i.id for i in await admin.invitations(code)] == [sent.id]
    [mine] = await bob.my_invitations()
    assert mine.org_code == code
    with pytest.raises(Invalid):
        await bob.accept("")
    joined = await bob.accept(code_for(mailer, bob_user.email), mine.id)
    assert joined.member_type is MemberType.OPERATOR

    second = await admin.invite(code, "carol@example.com")
    cancelled = await admin.cancel_invitation(code, second.id)
    assert cancelled.status is InvitationStatus.CANCELLED

    members = {m.email: m for m in await admin.members(code)}
    assert [r.name for r in members[admin_user.email].roles] == [ADMINISTRATOR_ROLE]
    assert (await admin.member(code, bob_user.email)).type is MemberType.OPERATOR
    updated = await admin.update_member(code, bob_user.user_id or "", MemberType.MANAGER)
    assert updated.email == bob_user.email
    assert updated.type is MemberType.MANAGER
    with pytest.raises(Forbidden):
        await bob.members(code)
    with pytest.raises(Conflict) as last:
        await admin.leave(code)
    assert last.value.code == "last_org_admin"
    await admin.remove_member(code, bob_user.email)
    with pytest.raises(NotFound):
        await bob.get(code)


async def test_invitations_can_be_rejected_and_members_can_leave(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    _, mailer = platform
    (admin, _), (bob, bob_user) = await login(), await login()
    code = unique_code()
    await admin.create("Acme Operations", code)
    first = await admin.invite(code, bob_user.email)
    rejected = await bob.reject(invitation_id=first.id)
    assert rejected.status is InvitationStatus.REJECTED
    await admin.invite(code, bob_user.email)
    await bob.accept(code_for(mailer, bob_user.email))
    with pytest.raises(Forbidden):
        await bob.delete(code)
    await bob.leave(code)
    with pytest.raises(NotFound):
        await bob.get(code)
    deleted = await admin.delete(code)
    assert deleted.code == code
    assert await admin.list_orgs() == []


async def test_roles_permissions_and_can(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    _, mailer = platform
    (admin, _), (bob, bob_user) = await login(), await login()
    code = unique_code()
    await admin.create("Acme Operations", code)
    await admin.invite(code, bob_user.email)
    await bob.accept(code_for(mailer, bob_user.email))

    assert [r.name for r in await admin.roles(code)] == [ADMINISTRATOR_ROLE, WORKER_ROLE]
    runner = await admin.create_role(
        code,
        "Runner",
        {
            "templates": GrantSpec(allow=["view", "run"]),
            "org": GrantSpec(allow=["view"], deny=["delete"]),
        },
    )
    assert runner.grants["templates"] == GrantSpec(allow=["view", "execute"], deny=[])
    with pytest.raises(Invalid) as bad:
        await admin.create_role(code, "Bad", {"planets": GrantSpec(allow=["fly"])})
    assert bad.value.errors[0].field == "grants.planets"
    assert (await admin.role(code, "runner")).id == runner.id

    denied = await bob.can(code, "execute", "templates")
    assert not denied.allowed
    assert denied.reason == "has no role in this organisation"
    await admin.assign_role(code, "Runner", user=bob_user.email)
    allowed = await bob.can(code, "run", "templates")
    assert allowed.allowed
    assert allowed.action == "execute"
    about_bob = await admin.can(code, "delete", "org", bob_user.email)
    assert not about_bob.allowed
    assert "Runner denies delete org" in about_bob.reason
    with pytest.raises(Invalid):
        await bob.can(code, "fly", "templates")

    renamed = await admin.update_role(
        code, "Runner", name="Executor", grants={"templates": GrantSpec(allow=["view"])}
    )
    assert renamed.name == "Executor"
    assert not (await bob.can(code, "execute", "templates")).allowed
    replaced = await admin.set_permissions(code, "Executor", {"org_config": GrantSpec(["view"])})
    assert list(replaced.grants) == ["org_config"]
    await admin.unassign_role(code, "Executor", user=bob_user.user_id)
    with pytest.raises(Conflict):
        await admin.delete_role(code, ADMINISTRATOR_ROLE)
    await admin.delete_role(code, "Executor")
    with pytest.raises(NotFound):
        await admin.role(code, "Executor")
    with pytest.raises(Forbidden):
        await bob.create_role(code, "Mine", {})


async def test_worker_tokens(login: Login, platform: tuple[Platform, InMemoryMailer]) -> None:
    p, _ = platform
    (admin, _), (stranger, _) = await login(), await login()
    code = unique_code()
    await admin.create("Acme Operations", code)
    issued = await admin.create_token(code, "builder")
    assert issued.token.startswith("opsicle-")
    assert [r.name for r in issued.roles] == [WORKER_ROLE]
    listed = await admin.tokens(code)
    assert [t.id for t in listed] == [issued.id]
    got = await admin.token(code, "builder")
    assert got.active
    await admin.assign_role(code, ADMINISTRATOR_ROLE, token=issued.id)
    await admin.unassign_role(code, WORKER_ROLE, token="builder")
    assert [r.name for r in (await admin.token(code, issued.id)).roles] == [ADMINISTRATOR_ROLE]
    rotated = await admin.rotate_token(code, issued.id)
    assert rotated.token != issued.token
    revoked = await admin.revoke_token(code, "builder")
    assert not revoked.active
    assert revoked.revoked_at is not None
    with pytest.raises(Conflict):
        await admin.rotate_token(code, issued.id)
    with pytest.raises(Unauthenticated):
        await authenticate_token(p, issued.id, rotated.token)
    with pytest.raises(NotFound):
        await stranger.tokens(code)
    with pytest.raises(NotFound):
        await stranger.create_token(code, "sneaky")


async def test_audit_trails_and_verification(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    (admin, admin_user), (bob, _) = await login(), await login()
    code = unique_code()
    await admin.create("Acme Operations", code)
    for n in range(3):
        await admin.create_token(code, f"w{n}")
    mine = await admin.audit_logs(verb="token.create", limit=2)
    assert len(mine.items) == 2
    assert mine.items[0].actor == admin_user.user_id
    assert mine.items[0].actor_email == admin_user.email
    assert mine.items[0].user_agent == "opsicle-cli"
    more = await admin.audit_logs(verb="token.create", cursor=mine.next_cursor)
    assert [e.data["name"] for e in more.items] == ["w2"]
    org_trail = await admin.audit_logs(code, resource="token")
    assert len(org_trail.items) == 3
    window = await admin.audit_logs(code, since=mine.items[1].at, until=more.items[0].at)
    assert [e.data.get("name") for e in window.items] == ["w1"]
    with pytest.raises(NotFound):
        await bob.audit_logs(code)
    with pytest.raises(Invalid):
        await admin.audit_logs(limit=0)
    check = await bob.verify_audit_logs()
    assert check.ok
    assert check.checked >= 4


async def test_problems_are_rfc9457_and_routes_need_a_session(
    platform: tuple[Platform, InMemoryMailer],
) -> None:
    p, _ = platform
    app = build_app("controller", controller_routes(p), [])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://opsicle"
    ) as client:
        anonymous = await client.get("/api/v1/orgs")
        assert anonymous.status_code == 401
        caller = await make_user(p)
        async with p.uow() as uow:
            user = await uow.users.get(caller.user_id or "")
        _, token = await open_session(p, user, caller)
        headers = {"authorization": f"Bearer {token}"}
        bad = await client.post("/api/v1/orgs", json={"name": "Acme", "code": 5}, headers=headers)
        assert bad.status_code == 422
        problem = bad.json()
        assert problem["code"] == "invalid"
        assert "code" in problem["errors"]
        missing = await client.get("/api/v1/orgs/nope-nope", headers=headers)
        assert missing.status_code == 404
        assert missing.json()["code"] == "org_not_found"
        can = await client.get("/api/v1/orgs/nope-nope/can", headers=headers)
        assert can.status_code == 422


def _route_keys(routes: list[Any]) -> set[tuple[str, str]]:
    keys = set()
    for route in routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                keys.add((method.lower(), route.path))
    return keys


def test_every_controller_route_is_in_the_openapi_document() -> None:
    p, _ = memory_platform()
    doc = controller_api(p).openapi()
    documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
    served = _route_keys(controller_routes(p))
    own = {("get", "/api/v1/openapi.json"), ("get", "/api/v1/docs")}
    assert served - own == documented
    assert {
        ("post", "/api/v1/orgs"),
        ("get", "/api/v1/orgs/{org}/audit-logs"),
        ("post", "/api/v1/audit-logs/verify"),
    } <= documented
