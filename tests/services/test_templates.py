"""Templates: versions, default version, deletion, org permissions and personal sharing."""

from __future__ import annotations

import threading

import pytest

from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from adapters.template_reader import read_template
from domain.audit import Outcome
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.orgs import MemberType
from domain.permissions import Action, Grant, Resource
from domain.services import orgs, roles, templates
from domain.services.platform import PARSE_INLINE_CHARS, Caller, Platform, parse
from domain.templates import ALL_TEMPLATE_RIGHTS, TemplateRight
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user, unique_code
from tests.services.template_support import simple_text, template_code


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def platform(clock: FakeClock) -> tuple[Platform, InMemoryMailer]:
    return memory_platform(clock)


@pytest.fixture
def p(platform: tuple[Platform, InMemoryMailer]) -> Platform:
    return platform[0]


@pytest.fixture
def mailer(platform: tuple[Platform, InMemoryMailer]) -> InMemoryMailer:
    return platform[1]


async def submit(
    p: Platform, caller: Caller, text: str, org: str | None = None
) -> templates.TemplateView:
    return await templates.submit_template(
        p, caller, text, read=read_template, source="t.yaml", org_ref=org
    )


async def shared_with(
    p: Platform, mailer: InMemoryMailer, owner: Caller, name: str, rights: TemplateRight
) -> Caller:
    other = await make_user(p)
    await templates.invite_user(p, owner, name, other.email, rights)
    await templates.accept_invitation(p, other, template_code(mailer, other.email))
    return other


async def org_member(
    p: Platform,
    mailer: InMemoryMailer,
    admin: Caller,
    code: str,
    allow: Action,
    **more: Action,
) -> Caller:
    """A member of the org whose only role allows ``allow`` on templates (and ``more``, by
    resource name, elsewhere)."""
    member = await make_user(p)
    await orgs.invite(p, admin, code, member.email, MemberType.MEMBER)
    match = mailer.to(member.email)[-1].text.split("join code: ")[1].split()[0]
    await orgs.accept_invitation(p, member, match)
    grants = {Resource.TEMPLATES: Grant(allow=allow)}
    grants.update({Resource(k): Grant(allow=v) for k, v in more.items()})
    role_name = f"role-{p.ids.new_id().lower()}"
    await roles.create_role(p, admin, code, role_name, grants)
    await roles.assign_role(p, admin, code, role_name, user=member.email)
    return member


# ---------------------------------------------------------------- versions


async def test_submitting_the_same_name_again_adds_a_version_and_keeps_the_default(
    p: Platform,
) -> None:
    me = await make_user(p)
    first = await submit(p, me, simple_text("greet", echo="one"))
    assert first.template.default_version == 1 and first.version is not None
    assert first.version.version == 1 and first.rights == ALL_TEMPLATE_RIGHTS
    second = await submit(p, me, simple_text("greet", echo="two"))
    assert second.template.id == first.template.id
    assert second.version is not None and second.version.version == 2
    assert second.template.latest_version == 2 and second.template.default_version == 1
    got = await templates.get_template(p, me, "greet")
    assert got.version is not None and 'echo "one' in got.version.content
    v2 = await templates.get_template(p, me, first.template.id, version=2)
    assert v2.version is not None and v2.version.content == simple_text("greet", echo="two")
    _, versions = await templates.list_versions(p, me, "greet")
    assert [v.version for v in versions] == [1, 2]
    changed = await templates.set_default_version(p, me, "greet", 2)
    assert changed.template.default_version == 2
    got = await templates.get_template(p, me, "greet")
    assert got.version is not None and got.version.version == 2
    with pytest.raises(NotFound) as missing:
        await templates.set_default_version(p, me, "greet", 9)
    assert missing.value.code == "template_version_not_found"
    assert [t.template.name for t in await templates.list_templates(p, me)] == ["greet"]
    verbs = [e.verb async for e in p.audit.all()]
    assert verbs.count("template.submit") == 2 and "template.default_version" in verbs


async def test_an_invalid_template_is_refused_naming_file_line_and_field(p: Platform) -> None:
    me = await make_user(p)
    bad = simple_text("bad").replace("image: busybox:latest", "image: 12")
    bad = bad.replace("commands: ['echo \"hello $WHO\"']", "commands: []")
    with pytest.raises(Invalid) as caught:
        await submit(p, me, bad)
    [problem] = [e for e in caught.value.errors if "commands" in e.field]
    assert problem.source == "t.yaml" and problem.line == 13
    with pytest.raises(Invalid):
        await submit(p, me, "apiVersion: v1\ntype: Automation\nmetadata: {name: x}\n")
    assert await templates.list_templates(p, me) == []


async def test_deleting_a_template_removes_it(p: Platform) -> None:
    me = await make_user(p)
    await submit(p, me, simple_text("gone"))
    await templates.delete_template(p, me, "gone")
    with pytest.raises(NotFound):
        await templates.get_template(p, me, "gone")


async def test_personal_templates_of_others_are_not_found(p: Platform) -> None:
    owner, stranger = await make_user(p), await make_user(p)
    view = await submit(p, owner, simple_text("private"))
    for ref in ("private", view.template.id):
        with pytest.raises(NotFound):
            await templates.get_template(p, stranger, ref)
        with pytest.raises(NotFound):
            await templates.delete_template(p, stranger, ref)
    assert await templates.list_templates(p, stranger) == []
    failures = [e async for e in p.audit.all() if e.outcome is Outcome.FAILURE]
    assert failures and failures[-1].verb == "template.delete"


# ---------------------------------------------------------------- org templates


async def test_org_templates_follow_the_org_roles(p: Platform, mailer: InMemoryMailer) -> None:
    admin = await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    view = await submit(p, admin, simple_text("deploy"), org=code)
    assert view.template.org_id is not None and view.template.owner_id is None
    again = await submit(p, admin, simple_text("deploy", echo="v2"), org=code)
    assert again.version is not None and again.version.version == 2
    # The same name as a personal template is a different template.
    mine = await submit(p, admin, simple_text("deploy"))
    assert mine.template.id != view.template.id
    viewer = await org_member(p, mailer, admin, code, Action.VIEW)
    assert [t.template.name for t in await templates.list_templates(p, viewer, code)] == ["deploy"]
    got = await templates.get_template(p, viewer, "deploy", code)
    assert got.rights == TemplateRight.VIEW
    with pytest.raises(Forbidden):
        await submit(p, viewer, simple_text("new-one"), org=code)
    with pytest.raises(Forbidden):
        await submit(p, viewer, simple_text("deploy"), org=code)
    with pytest.raises(Forbidden):
        await templates.set_default_version(p, viewer, "deploy", 2, code)
    with pytest.raises(Forbidden):
        await templates.delete_template(p, viewer, "deploy", code)
    with pytest.raises(Invalid):
        await templates.invite_user(p, admin, view.template.id, viewer.email, TemplateRight.VIEW)
    outsider = await make_user(p)
    with pytest.raises(NotFound):
        await templates.list_templates(p, outsider, code)
    with pytest.raises(NotFound):
        await templates.get_template(p, outsider, view.template.id)
    await templates.delete_template(p, admin, "deploy", code)
    assert await templates.list_templates(p, admin, code) == []


# ---------------------------------------------------------------- sharing


async def test_sharing_grants_exactly_the_rights_invited(
    p: Platform, mailer: InMemoryMailer
) -> None:
    owner = await make_user(p)
    await submit(p, owner, simple_text("shared"))
    viewer = await shared_with(p, mailer, owner, "shared", TemplateRight.VIEW)
    assert [t.template.name for t in await templates.list_templates(p, viewer)] == ["shared"]
    got = await templates.get_template(p, viewer, "shared")
    assert got.rights == TemplateRight.VIEW
    with pytest.raises(Forbidden):
        await templates.set_default_version(p, viewer, "shared", 1)
    with pytest.raises(Forbidden):
        await templates.delete_template(p, viewer, "shared")
    with pytest.raises(Forbidden):
        await templates.invite_user(p, viewer, "shared", "x@example.com", TemplateRight.VIEW)
    users = await templates.list_users(p, viewer, "shared")
    assert {(u.email, u.grant.rights) for u in users} == {
        (owner.email, ALL_TEMPLATE_RIGHTS),
        (viewer.email, TemplateRight.VIEW),
    }
    # An inviter hands out only rights they hold.
    inviter = await shared_with(
        p, mailer, owner, "shared", TemplateRight.VIEW | TemplateRight.INVITE
    )
    with pytest.raises(Forbidden):
        await templates.invite_user(p, inviter, "shared", "y@example.com", TemplateRight.DELETE)
    invitation = await templates.invite_user(
        p, inviter, "shared", "y@example.com", TemplateRight.VIEW
    )
    assert invitation.code_hash != template_code(mailer, "y@example.com")
    with pytest.raises(Conflict):
        await templates.invite_user(p, inviter, "shared", "y@example.com", TemplateRight.VIEW)
    with pytest.raises(Conflict):
        await templates.invite_user(p, owner, "shared", viewer.email, TemplateRight.VIEW)


async def test_invitations_answer_only_their_addressee_and_can_be_rejected(
    p: Platform, mailer: InMemoryMailer
) -> None:
    owner, invitee, other = await make_user(p), await make_user(p), await make_user(p)
    await submit(p, owner, simple_text("t1"))
    await templates.invite_user(p, owner, "t1", invitee.email, TemplateRight.VIEW)
    code = template_code(mailer, invitee.email)
    with pytest.raises(NotFound):
        await templates.accept_invitation(p, other, code)
    rejected = await templates.reject_invitation(p, invitee, code)
    assert rejected.status.value == "rejected"
    with pytest.raises(NotFound):
        await templates.accept_invitation(p, invitee, code)
    assert await templates.list_templates(p, invitee) == []


async def test_expired_invitations_cannot_be_accepted(
    p: Platform, mailer: InMemoryMailer, clock: FakeClock
) -> None:
    owner, invitee = await make_user(p), await make_user(p)
    await submit(p, owner, simple_text("t2"))
    await templates.invite_user(p, owner, "t2", invitee.email, TemplateRight.VIEW)
    clock.advance(p.limits.invitation_seconds + 1)
    with pytest.raises(Conflict) as caught:
        await templates.accept_invitation(p, invitee, template_code(mailer, invitee.email))
    assert caught.value.code == "invitation_expired"
    # A fresh invitation replaces the expired one.
    await templates.invite_user(p, owner, "t2", invitee.email, TemplateRight.VIEW)


async def test_the_last_user_with_invite_rights_cannot_be_removed(
    p: Platform, mailer: InMemoryMailer
) -> None:
    owner = await make_user(p)
    await submit(p, owner, simple_text("keep"))
    viewer = await shared_with(p, mailer, owner, "keep", TemplateRight.VIEW)
    with pytest.raises(Conflict) as caught:
        await templates.remove_user(p, owner, "keep", owner.email)
    assert caught.value.code == "last_inviter"
    with pytest.raises(Forbidden):
        await templates.remove_user(p, viewer, "keep", owner.email)
    helper = await shared_with(p, mailer, owner, "keep", TemplateRight.VIEW | TemplateRight.INVITE)
    removed = await templates.remove_user(p, helper, "keep", owner.email)
    assert removed.email == owner.email
    with pytest.raises(NotFound):
        await templates.get_template(p, owner, "keep")
    with pytest.raises(Conflict):
        await templates.remove_user(p, helper, "keep", helper.user_id or "")
    # Anyone may leave on their own.
    await templates.remove_user(p, viewer, "keep", viewer.email)
    assert [u.email for u in await templates.list_users(p, helper, "keep")] == [helper.email]
    with pytest.raises(NotFound):
        await templates.remove_user(p, helper, "keep", "nobody@example.com")


def test_rights_are_named() -> None:
    assert templates.rights_named(["view,execute", "invite"]) == (
        TemplateRight.VIEW | TemplateRight.EXECUTE | TemplateRight.INVITE
    )
    with pytest.raises(Invalid):
        templates.rights_named(["fly"])
    with pytest.raises(Invalid):
        templates.rights_named([])
    assert templates.right_names(ALL_TEMPLATE_RIGHTS) == [
        "view",
        "execute",
        "update",
        "delete",
        "invite",
    ]


async def test_a_long_text_is_parsed_off_the_event_loop() -> None:
    threads: list[int] = []

    def read(text: str, source: str) -> int:
        threads.append(threading.get_ident())
        return len(text)

    assert await parse(read, "x" * PARSE_INLINE_CHARS, "short") == PARSE_INLINE_CHARS
    assert await parse(read, "x" * (PARSE_INLINE_CHARS + 1), "long") == PARSE_INLINE_CHARS + 1
    assert threads[0] == threading.get_ident() != threads[1]
