"""Every template route through the SDK over ``httpx.ASGITransport``, on in-memory adapters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.http.controller_client import ControllerClient
from adapters.http.orgs_client import OrgsClient
from adapters.http.templates_client import TemplatesClient
from adapters.memory.mail import InMemoryMailer
from domain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from domain.services.platform import Caller, Platform
from domain.services.sessions import open_session
from domain.templates import TemplateInvitationStatus
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_routes
from tests.services.org_support import make_user, unique_code
from tests.services.template_support import simple_text, template_code

Login = Callable[[], Awaitable[tuple[ControllerClient, Caller]]]


@pytest.fixture
def platform() -> tuple[Platform, InMemoryMailer]:
    return memory_platform()


@pytest.fixture
async def login(platform: tuple[Platform, InMemoryMailer]) -> AsyncIterator[Login]:
    """Make a user, open a session and give back a controller client acting as them."""
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


async def test_submit_list_get_versions_default_and_delete(login: Login) -> None:
    client, _ = await login()
    t = TemplatesClient(client)
    first = await t.submit(simple_text("web", echo="one"), source="web.yaml")
    assert first.version == 1 and first.template.default_version == 1
    assert first.template.rights == ["view", "execute", "update", "delete", "invite"]
    second = await t.submit(simple_text("web", echo="two"), source="web.yaml")
    assert second.version == 2 and second.template.id == first.template.id
    assert [i.name for i in await t.list_templates()] == ["web"]
    got = await t.get("web")
    assert got.version == 1 and got.content == simple_text("web", echo="one")
    assert (await t.get(first.template.id, version=2)).content == simple_text("web", echo="two")
    versions = await t.versions("web")
    assert [(v.version, v.is_default) for v in versions] == [(1, True), (2, False)]
    changed = await t.set_default_version("web", 2)
    assert changed.template.default_version == 2 and changed.version == 2
    with pytest.raises(NotFound):
        await t.set_default_version("web", 7)
    with pytest.raises(Invalid):
        await t.get("web", version=0)
    # Numbers no store can hold, and digits of other scripts, are refused by name.
    for version in (10**20, "²"):
        with pytest.raises(Invalid) as caught:
            await t.get("web", version=version)  # type: ignore[arg-type]
        assert caught.value.errors[0].field == "version"
    with pytest.raises(Invalid) as overflow:
        await t.set_default_version("web", 10**23)
    assert overflow.value.errors[0].field == "version"
    deleted = await t.delete("web")
    assert deleted.id == first.template.id
    with pytest.raises(NotFound):
        await t.get("web")


async def test_invalid_yaml_is_a_problem_naming_file_line_and_field(login: Login) -> None:
    client, _ = await login()
    bad = simple_text("bad").replace("image: busybox:latest", "image: ''")
    with pytest.raises(Invalid) as caught:
        await TemplatesClient(client).submit(bad, source="bad.yaml")
    [(field, message)] = [(e.field, e.message) for e in caught.value.errors]
    assert field == "spec.template.phases[0].image" and message
    reply = await client._http.post(
        "/api/v1/templates",
        json={"content": bad, "source": "b.yaml"},
        headers={"authorization": f"Bearer {client.token}"},
    )
    assert (
        reply.status_code == 422
        and "b.yaml:12:9: spec.template.phases[0].image" in reply.json()["detail"]
    )


async def test_org_templates(login: Login) -> None:
    client, _ = await login()
    code = unique_code()
    await OrgsClient(client).create("Acme Operations", code)
    t = TemplatesClient(client)
    made = await t.submit(simple_text("deploy"), org=code)
    assert made.template.org_id is not None
    assert [i.name for i in await t.list_templates(code)] == ["deploy"]
    assert await t.list_templates() == []
    assert (await t.get("deploy", org=code)).template.id == made.template.id
    assert [v.version for v in await t.versions("deploy", org=code)] == [1]
    await t.set_default_version("deploy", 1, org=code)
    other, _ = await login()
    with pytest.raises(NotFound):
        await TemplatesClient(other).list_templates(code)
    await t.delete("deploy", org=code)


async def test_sharing_invitations_users_and_removal(
    login: Login, platform: tuple[Platform, InMemoryMailer]
) -> None:
    _, mailer = platform
    (owner_client, owner), (guest_client, guest) = await login(), await login()
    owner_t, guest_t = TemplatesClient(owner_client), TemplatesClient(guest_client)
    await owner_t.submit(simple_text("shared"))
    invitation = await owner_t.invite("shared", guest.email, ["view", "execute"])
    assert invitation.rights == ["view", "execute"]
    assert invitation.status is TemplateInvitationStatus.PENDING
    with pytest.raises(Invalid):
        await owner_t.invite("shared", guest.email, ["fly"])
    with pytest.raises(Conflict):
        await owner_t.invite("shared", guest.email, ["view"])
    joined = await guest_t.accept(template_code(mailer, guest.email))
    assert joined.name == "shared" and joined.rights == ["view", "execute"]
    users = await guest_t.users("shared")
    assert {(u.email, tuple(u.rights)) for u in users} == {
        (owner.email, ("view", "execute", "update", "delete", "invite")),
        (guest.email, ("view", "execute")),
    }
    with pytest.raises(Forbidden):
        await guest_t.delete("shared")
    with pytest.raises(Conflict):
        await owner_t.remove_user("shared", owner.email)
    removed = await owner_t.remove_user("shared", guest.email)
    assert removed.email == guest.email
    with pytest.raises(NotFound):
        await guest_t.get("shared")
    await owner_t.invite("shared", guest.email, ["view"])
    rejected = await guest_t.reject(template_code(mailer, guest.email))
    assert rejected.status is TemplateInvitationStatus.REJECTED
    with pytest.raises(NotFound):
        await guest_t.accept(template_code(mailer, guest.email))


async def test_template_routes_need_a_session(platform: tuple[Platform, InMemoryMailer]) -> None:
    p, _ = platform
    app = build_app("controller", controller_routes(p), [])
    async with ControllerClient("http://opsicle", transport=httpx.ASGITransport(app=app)) as c:
        with pytest.raises(Unauthenticated):
            await TemplatesClient(c).list_templates()
