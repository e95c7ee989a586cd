"""Organisations, invitations, members, roles, tokens and the audit trail on in-memory adapters."""

from __future__ import annotations

import re
from datetime import timedelta

import attrs
import pytest

from adapters.memory.audit import InMemoryAuditLog
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from domain.audit import Outcome
from domain.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from domain.orgs import InvitationStatus, MemberType
from domain.permissions import ADMINISTRATOR_ROLE, WORKER_ROLE, Action, Grant, Resource
from domain.services import audit, orgs, roles, tokens
from domain.services.authorization import action_named, resource_named
from domain.services.platform import Caller, Platform
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user, unique_code


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


def join_code(mailer: InMemoryMailer, email: str) -> str:
    match = re.search(r"join code: (\S+)", mailer.to(email)[-1].text)
    assert match
    return match.group(1)


async def org_with_member(
    p: Platform, mailer: InMemoryMailer, member_type: MemberType = MemberType.MEMBER
) -> tuple[Caller, Caller, str]:
    """An org whose admin invited a second user who joined; returns both and the org code."""
    admin, other = await make_user(p), await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    await orgs.invite(p, admin, code, other.email, member_type)
    await orgs.accept_invitation(p, other, join_code(mailer, other.email))
    return admin, other, code


async def verbs(p: Platform) -> list[tuple[str, Outcome]]:
    return [(e.verb, e.outcome) async for e in p.audit.all()]


# ---------------------------------------------------------------- organisations


async def test_creating_an_org_makes_the_creator_its_admin_with_default_roles(p: Platform) -> None:
    me = await make_user(p)
    org = await orgs.create_org(p, me, "Acme Operations", "acme-ops1")
    mine = await orgs.get_org(p, me, "ACME-OPS1")
    assert mine.org == org
    assert mine.membership.type is MemberType.ADMIN
    assert (await orgs.get_org(p, me, org.id)).org == org
    names = [r.name for r in await roles.list_roles(p, me, org.id)]
    assert names == [ADMINISTRATOR_ROLE, WORKER_ROLE]
    [member] = await orgs.list_members(p, me, org.code)
    assert member.email == me.email
    assert [r.name for r in member.roles] == [ADMINISTRATOR_ROLE]
    assert [o.org.code for o in await orgs.list_orgs(p, me)] == ["acme-ops1"]


@pytest.mark.parametrize(
    ("name", "code", "field"),
    [
        ("Short", "good-code", "name"),
        ("Fine Name", "ab", "code"),
        ("Fine Name", "-starts-with-dash", "code"),
        ("Fine Name", "has_underscore", "code"),
        ("Bad <name>", "good-code", "name"),
        ("Fine Name", "x" * 33, "code"),
    ],
)
async def test_org_names_and_codes_follow_the_rules(
    p: Platform, name: str, code: str, field: str
) -> None:
    me = await make_user(p)
    with pytest.raises(Invalid) as caught:
        await orgs.create_org(p, me, name, code)
    assert field in caught.value.field_map()


async def test_org_codes_are_unique_whatever_the_case(p: Platform) -> None:
    a, b = await make_user(p), await make_user(p)
    await orgs.create_org(p, a, "First Org", "shared-code")
    with pytest.raises(Conflict) as caught:
        await orgs.create_org(p, b, "Second Org", "SHARED-code")
    assert caught.value.code == "org_exists"


async def test_an_org_you_do_not_belong_to_is_not_found_like_a_missing_one(p: Platform) -> None:
    owner, stranger = await make_user(p), await make_user(p)
    org = await orgs.create_org(p, owner, "Private Org", unique_code())
    for ref in (org.id, org.code, "no-such-org"):
        with pytest.raises(NotFound) as caught:
            await orgs.get_org(p, stranger, ref)
        assert caught.value.code == "org_not_found"
    with pytest.raises(NotFound):
        await orgs.list_members(p, stranger, org.code)
    with pytest.raises(NotFound):
        await tokens.list_tokens(p, stranger, org.code)
    with pytest.raises(NotFound):
        await audit.org_trail(p, stranger, org.code, audit.Query())


async def test_deleting_an_org_needs_org_delete(p: Platform, mailer: InMemoryMailer) -> None:
    admin, member, code = await org_with_member(p, mailer)
    with pytest.raises(Forbidden) as caught:
        await orgs.delete_org(p, member, code)
    assert "has no role" in str(caught.value)
    await orgs.delete_org(p, admin, code)
    with pytest.raises(NotFound):
        await orgs.get_org(p, admin, code)
    assert await orgs.list_orgs(p, member) == []


async def test_anonymous_callers_are_refused(p: Platform) -> None:
    with pytest.raises(Unauthenticated):
        await orgs.create_org(p, Caller(), "Acme Operations", "acme-anon")


# ---------------------------------------------------------------- invitations


async def test_invitation_is_emailed_and_accepted_only_by_its_addressee(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, invitee, intruder = await make_user(p), await make_user(p), await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    invitation = await orgs.invite(p, admin, code, invitee.email.upper(), MemberType.OPERATOR)
    secret = join_code(mailer, invitee.email)
    assert secret not in repr(invitation)
    [mine] = await orgs.my_invitations(p, invitee)
    assert mine.org.code == code
    assert await orgs.my_invitations(p, intruder) == []
    with pytest.raises(NotFound):
        await orgs.accept_invitation(p, intruder, secret)
    with pytest.raises(NotFound):
        await orgs.accept_invitation(p, invitee, "join-wrong")
    joined = await orgs.accept_invitation(p, invitee, secret, invitation.id)
    assert joined.membership.type is MemberType.OPERATOR
    with pytest.raises(NotFound):  # single use
        await orgs.accept_invitation(p, invitee, secret)
    assert await orgs.my_invitations(p, invitee) == []
    with pytest.raises(Conflict):
        await orgs.invite(p, admin, code, invitee.email)


async def test_an_expired_invitation_cannot_be_accepted_and_can_be_renewed(
    p: Platform, mailer: InMemoryMailer, clock: FakeClock
) -> None:
    admin, invitee = await make_user(p), await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    await orgs.invite(p, admin, code, invitee.email)
    with pytest.raises(Conflict) as pending:
        await orgs.invite(p, admin, code, invitee.email)
    assert pending.value.code == "invitation_exists"
    old = join_code(mailer, invitee.email)
    clock.advance(p.limits.invitation_seconds + 1)
    with pytest.raises(Conflict) as caught:
        await orgs.accept_invitation(p, invitee, old)
    assert caught.value.code == "invitation_expired"
    assert await orgs.my_invitations(p, invitee) == []
    await orgs.invite(p, admin, code, invitee.email)
    await orgs.accept_invitation(p, invitee, join_code(mailer, invitee.email))


async def test_invitations_can_be_rejected_and_cancelled(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, a, b = await make_user(p), await make_user(p), await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    to_a = await orgs.invite(p, admin, code, a.email)
    to_b = await orgs.invite(p, admin, code, b.email)
    with pytest.raises(NotFound):
        await orgs.reject_invitation(p, b, None, to_a.id)
    rejected = await orgs.reject_invitation(p, a, None, to_a.id)
    assert rejected.status is InvitationStatus.REJECTED
    cancelled = await orgs.cancel_invitation(p, admin, code, to_b.id)
    assert cancelled.status is InvitationStatus.CANCELLED
    with pytest.raises(NotFound):
        await orgs.accept_invitation(p, b, join_code(mailer, b.email))
    with pytest.raises(Conflict):
        await orgs.cancel_invitation(p, admin, code, to_b.id)
    statuses = {i.id: i.status for i in await orgs.org_invitations(p, admin, code)}
    assert statuses == {to_a.id: InvitationStatus.REJECTED, to_b.id: InvitationStatus.CANCELLED}
    with pytest.raises(Invalid):
        await orgs.reject_invitation(p, a, None, None)


async def test_inviting_needs_permission_and_inviting_an_admin_needs_manage(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    with pytest.raises(Forbidden):
        await orgs.invite(p, member, code, "someone@example.com")
    inviter = await roles.create_role(
        p, admin, code, "Inviter", {Resource.ORG_USER: Grant(allow=Action.CREATE | Action.VIEW)}
    )
    await roles.assign_role(p, admin, code, inviter.id, user=member.email)
    await orgs.invite(p, member, code, "someone@example.com")
    with pytest.raises(Forbidden):
        await orgs.invite(p, member, code, "boss@example.com", MemberType.ADMIN)


async def test_an_invited_admin_gets_the_administrator_role(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, second, code = await org_with_member(p, mailer, MemberType.ADMIN)
    view = await orgs.get_member(p, admin, code, second.user_id or "")
    assert [r.name for r in view.roles] == [ADMINISTRATOR_ROLE]


# ---------------------------------------------------------------- members


async def test_changing_a_member_changes_the_named_member_not_the_requester(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    changed = await orgs.change_member_type(p, admin, code, member.email, MemberType.MANAGER)
    assert changed.membership.user_id == member.user_id
    by_user = {
        m.membership.user_id: m.membership.type for m in await orgs.list_members(p, admin, code)
    }
    assert by_user == {admin.user_id: MemberType.ADMIN, member.user_id: MemberType.MANAGER}
    promoted = await orgs.change_member_type(p, admin, code, member.email, MemberType.ADMIN)
    assert [r.name for r in promoted.roles] == [ADMINISTRATOR_ROLE]
    demoted = await orgs.change_member_type(p, member, code, admin.email, MemberType.MEMBER)
    assert demoted.membership.user_id == admin.user_id
    assert demoted.roles == ()
    with pytest.raises(Forbidden):  # the demoted admin lost the Administrator role with it
        await orgs.change_member_type(p, admin, code, member.email, MemberType.MEMBER)


async def test_the_last_admin_can_neither_leave_nor_be_demoted_nor_removed(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    for attempt in (
        orgs.leave_org(p, admin, code),
        orgs.change_member_type(p, admin, code, admin.email, MemberType.MEMBER),
        orgs.remove_member(p, admin, code, admin.user_id or ""),
    ):
        with pytest.raises(Conflict) as caught:
            await attempt
        assert caught.value.code == "last_org_admin"
        assert "last admin" in str(caught.value)
    await orgs.change_member_type(p, admin, code, member.email, MemberType.ADMIN)
    await orgs.leave_org(p, admin, code)
    [left] = await orgs.list_members(p, member, code)
    assert left.membership.user_id == member.user_id


async def test_removing_a_member_removes_the_named_member(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    with pytest.raises(Forbidden):
        await orgs.remove_member(p, member, code, admin.email)
    removed = await orgs.remove_member(p, admin, code, member.email)
    assert removed.user_id == member.user_id
    assert [m.membership.user_id for m in await orgs.list_members(p, admin, code)] == [
        admin.user_id
    ]
    with pytest.raises(NotFound):
        await orgs.remove_member(p, admin, code, member.email)
    with pytest.raises(NotFound):
        await orgs.get_org(p, member, code)


async def test_a_member_may_leave(p: Platform, mailer: InMemoryMailer) -> None:
    _, member, code = await org_with_member(p, mailer)
    left = await orgs.leave_org(p, member, code)
    assert left.user_id == member.user_id
    assert await orgs.list_orgs(p, member) == []


# ---------------------------------------------------------------- roles and permissions


async def test_roles_are_created_edited_assigned_and_deleted(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    runner = await roles.create_role(
        p, admin, code, "Runner", {Resource.TEMPLATES: Grant(allow=Action.VIEW | Action.EXECUTE)}
    )
    with pytest.raises(Conflict):
        await roles.create_role(p, admin, code, "runner", {})
    assert not (await roles.can(p, member, code, Action.EXECUTE, Resource.TEMPLATES)).decision
    await roles.assign_role(p, admin, code, "Runner", user=member.user_id)
    answer = await roles.can(p, member, code, Action.EXECUTE, Resource.TEMPLATES)
    assert answer.decision.allowed
    assert "Runner" in answer.decision.reason
    updated = await roles.update_role(
        p,
        admin,
        code,
        runner.id,
        name="Viewer",
        grants={Resource.TEMPLATES: Grant(allow=Action.VIEW)},
    )
    assert updated.name == "Viewer"
    assert not (await roles.can(p, member, code, Action.EXECUTE, Resource.TEMPLATES)).decision
    replaced = await roles.set_permissions(
        p, admin, code, "Viewer", {Resource.ORG: Grant(allow=Action.VIEW)}
    )
    assert dict(replaced.grants) == {Resource.ORG: Grant(allow=Action.VIEW)}
    await roles.unassign_role(p, admin, code, "Viewer", user=member.email)
    assert not (await roles.can(p, member, code, Action.VIEW, Resource.ORG)).decision
    await roles.delete_role(p, admin, code, "Viewer")
    with pytest.raises(NotFound):
        await roles.get_role(p, admin, code, "Viewer")


async def test_deny_wins_over_allow(p: Platform, mailer: InMemoryMailer) -> None:
    admin, member, code = await org_with_member(p, mailer)
    await roles.create_role(p, admin, code, "All", {Resource.ORG: Grant(allow=Action(63))})
    await roles.create_role(p, admin, code, "NoDelete", {Resource.ORG: Grant(deny=Action.DELETE)})
    await roles.assign_role(p, admin, code, "All", user=member.email)
    await roles.assign_role(p, admin, code, "NoDelete", user=member.email)
    answer = await roles.can(p, member, code, Action.DELETE, Resource.ORG)
    assert not answer.decision
    assert "NoDelete denies delete org" in answer.decision.reason
    with pytest.raises(Forbidden) as caught:
        await orgs.delete_org(p, member, code)
    assert "NoDelete denies" in str(caught.value)
    assert (await roles.can(p, member, code, Action.VIEW, Resource.ORG)).decision


async def test_no_change_may_leave_the_org_without_a_member_who_can_manage_it(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    lock = {Resource.ORG_USER: Grant(deny=Action.MANAGE)}
    await roles.create_role(p, admin, code, "Locked", lock)
    with pytest.raises(Conflict) as caught:
        await roles.assign_role(p, admin, code, "Locked", user=admin.email)
    assert caught.value.code == "no_org_manager"
    assert "org_user:manage" in str(caught.value)
    await roles.create_role(p, admin, code, "Harmless", {})
    await roles.assign_role(p, admin, code, "Harmless", user=admin.email)
    with pytest.raises(Conflict):
        await roles.update_role(p, admin, code, "Harmless", grants=lock)
    assert (await roles.can(p, admin, code, Action.MANAGE, Resource.ORG_USER)).decision
    # With a second admin who can still manage, the first may be restricted.
    await orgs.change_member_type(p, admin, code, member.email, MemberType.ADMIN)
    await roles.assign_role(p, admin, code, "Locked", user=admin.email)
    assert not (await roles.can(p, admin, code, Action.MANAGE, Resource.ORG_USER)).decision
    # ...but the second admin may not then leave or be demoted.
    with pytest.raises(Conflict) as caught:
        await orgs.leave_org(p, member, code)
    assert caught.value.code == "no_org_manager"


async def test_deleting_the_role_of_the_last_member_who_can_manage_is_refused(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    await roles.create_role(p, admin, code, "Managers",
                            {Resource.ORG_USER: Grant(allow=Action.MANAGE)})
    await roles.assign_role(p, admin, code, "Managers", user=member.email)
    await roles.create_role(p, admin, code, "Locked",
                            {Resource.ORG_USER: Grant(deny=Action.MANAGE)})
    await roles.assign_role(p, admin, code, "Locked", user=admin.email)
    with pytest.raises(Conflict) as caught:
        await roles.delete_role(p, member, code, "Managers")
    assert caught.value.code == "no_org_manager"
    assert (await roles.can(p, member, code, Action.MANAGE, Resource.ORG_USER)).decision
    # Deleting the role that locked the admin out is fine: the admin can manage again.
    await roles.delete_role(p, member, code, "Locked")
    await roles.delete_role(p, admin, code, "Managers")


async def test_builtin_roles_are_protected(p: Platform, mailer: InMemoryMailer) -> None:
    admin, _, code = await org_with_member(p, mailer)
    for role in (ADMINISTRATOR_ROLE, WORKER_ROLE):
        with pytest.raises(Conflict):
            await roles.delete_role(p, admin, code, role)
    with pytest.raises(Conflict):
        await roles.update_role(p, admin, code, ADMINISTRATOR_ROLE, name="Boss")
    with pytest.raises(Conflict) as caught:
        await roles.unassign_role(p, admin, code, ADMINISTRATOR_ROLE, user=admin.email)
    assert caught.value.code == "admin_keeps_role"
    worker = await roles.update_role(
        p, admin, code, WORKER_ROLE, grants={Resource.TEMPLATES: Grant()}
    )
    assert Resource.TEMPLATES not in worker.grants


async def test_role_management_needs_manage_and_names_are_checked(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    with pytest.raises(Forbidden):
        await roles.create_role(p, member, code, "Mine", {Resource.ORG: Grant(allow=Action(63))})
    with pytest.raises(Forbidden):
        await roles.assign_role(p, member, code, ADMINISTRATOR_ROLE, user=member.email)
    with pytest.raises(Forbidden):
        await roles.list_roles(p, member, code)
    with pytest.raises(Invalid):
        await roles.create_role(p, admin, code, "   ", {})
    with pytest.raises(Invalid):
        await roles.assign_role(p, admin, code, WORKER_ROLE)
    with pytest.raises(NotFound):
        await roles.assign_role(p, admin, code, "Nope", user=member.email)
    with pytest.raises(NotFound):
        await roles.assign_role(p, admin, code, WORKER_ROLE, user="nobody@example.com")


async def test_roles_of_another_org_cannot_be_used(p: Platform) -> None:
    a, b = await make_user(p), await make_user(p)
    org_a = await orgs.create_org(p, a, "Org Alpha", unique_code())
    org_b = await orgs.create_org(p, b, "Org Beta", unique_code())
    [b_admin, _] = await roles.list_roles(p, b, org_b.code)
    with pytest.raises(NotFound):
        await roles.assign_role(p, a, org_a.code, b_admin.id, user=a.email)
    with pytest.raises(NotFound):
        await roles.get_role(p, a, org_a.code, b_admin.id)


async def test_can_answers_for_others_only_with_org_user_view(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    about_member = await roles.can(p, admin, code, Action.DELETE, Resource.ORG, member.email)
    assert about_member.user_id == member.user_id
    assert not about_member.decision
    assert about_member.decision.reason == "has no role in this organisation"
    with pytest.raises(Forbidden):
        await roles.can(p, member, code, Action.DELETE, Resource.ORG, admin.email)
    assert (await roles.can(p, admin, code, Action.DELETE, Resource.ORG)).decision


def test_actions_and_resources_are_read_by_name_and_alias() -> None:
    assert action_named("Run") is Action.EXECUTE
    assert action_named("read") is Action.VIEW
    assert resource_named("org-user") is Resource.ORG_USER
    with pytest.raises(Invalid):
        action_named("fly")
    with pytest.raises(Invalid):
        resource_named("planets")


# ---------------------------------------------------------------- worker tokens


async def test_tokens_show_their_secret_once_and_revoke_and_rotate_at_once(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    issued = await tokens.create_token(p, admin, code, "build-worker")
    token = issued.view.token
    assert issued.secret.startswith("opsicle-")
    assert issued.secret not in repr(issued.view)
    assert [r.name for r in issued.view.roles] == [WORKER_ROLE]
    assert (await tokens.authenticate_token(p, token.id, issued.secret)).token.id == token.id
    with pytest.raises(Unauthenticated):
        await tokens.authenticate_token(p, token.id, "opsicle-wrong")
    with pytest.raises(Conflict):
        await tokens.create_token(p, admin, code, "build-worker")
    rotated = await tokens.rotate_token(p, admin, code, "build-worker")
    assert rotated.view.token.id == token.id
    assert rotated.secret != issued.secret
    with pytest.raises(Unauthenticated):
        await tokens.authenticate_token(p, token.id, issued.secret)
    await tokens.authenticate_token(p, token.id, rotated.secret)
    revoked = await tokens.revoke_token(p, admin, code, token.id)
    assert revoked.token.revoked_at is not None
    with pytest.raises(Unauthenticated):
        await tokens.authenticate_token(p, token.id, rotated.secret)
    with pytest.raises(Conflict):
        await tokens.revoke_token(p, admin, code, token.id)
    with pytest.raises(Conflict):
        await tokens.rotate_token(p, admin, code, token.id)
    [listed] = await tokens.list_tokens(p, admin, code)
    assert not listed.token.active
    assert (await tokens.get_token(p, admin, code, token.id)).token == revoked.token
    with pytest.raises(Forbidden):
        await tokens.list_tokens(p, member, code)
    with pytest.raises(NotFound):
        await tokens.get_token(p, admin, code, "nope")


async def test_token_roles_are_chosen_assigned_and_unassigned(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, _, code = await org_with_member(p, mailer)
    issued = await tokens.create_token(p, admin, code, "deployer", [ADMINISTRATOR_ROLE])
    assert [r.name for r in issued.view.roles] == [ADMINISTRATOR_ROLE]
    await roles.assign_role(p, admin, code, WORKER_ROLE, token="deployer")
    await roles.unassign_role(p, admin, code, ADMINISTRATOR_ROLE, token=issued.view.token.id)
    view = await tokens.get_token(p, admin, code, "deployer")
    assert [r.name for r in view.roles] == [WORKER_ROLE]
    with pytest.raises(Invalid):
        await tokens.create_token(p, admin, code, "")


async def test_choosing_token_roles_needs_manage(p: Platform, mailer: InMemoryMailer) -> None:
    admin, member, code = await org_with_member(p, mailer)
    await roles.create_role(
        p, admin, code, "TokenMaker", {Resource.ORG_CONFIG: Grant(allow=Action.CREATE)}
    )
    await roles.assign_role(p, admin, code, "TokenMaker", user=member.email)
    await tokens.create_token(p, member, code, "plain")
    with pytest.raises(Forbidden):
        await tokens.create_token(p, member, code, "escalated", [ADMINISTRATOR_ROLE])


# ---------------------------------------------------------------- audit


async def test_every_mutation_is_audited_and_the_chain_verifies(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    await roles.create_role(p, admin, code, "Extra", {})
    await roles.assign_role(p, admin, code, "Extra", user=member.email)
    await roles.update_role(p, admin, code, "Extra", name="Extra2")
    await roles.unassign_role(p, admin, code, "Extra2", user=member.email)
    await roles.delete_role(p, admin, code, "Extra2")
    issued = await tokens.create_token(p, admin, code, "w1")
    await tokens.rotate_token(p, admin, code, "w1")
    await tokens.revoke_token(p, admin, code, "w1")
    await orgs.change_member_type(p, admin, code, member.email, MemberType.MANAGER)
    with pytest.raises(Forbidden):
        await orgs.delete_org(p, member, code)
    await orgs.leave_org(p, member, code)
    await orgs.delete_org(p, admin, code)
    assert await verbs(p) == [
        ("org.create", Outcome.SUCCESS),
        ("org.invite", Outcome.SUCCESS),
        ("invitation.accept", Outcome.SUCCESS),
        ("role.create", Outcome.SUCCESS),
        ("role.assign", Outcome.SUCCESS),
        ("role.update", Outcome.SUCCESS),
        ("role.unassign", Outcome.SUCCESS),
        ("role.delete", Outcome.SUCCESS),
        ("token.create", Outcome.SUCCESS),
        ("token.rotate", Outcome.SUCCESS),
        ("token.revoke", Outcome.SUCCESS),
        ("member.update", Outcome.SUCCESS),
        ("org.delete", Outcome.FAILURE),
        ("member.leave", Outcome.SUCCESS),
        ("org.delete", Outcome.SUCCESS),
    ]
    events = [e async for e in p.audit.all()]
    assert all(e.source_ip == "127.0.0.1" and e.user_agent == "pytest" for e in events)
    text = repr(events)
    assert issued.secret not in text
    assert join_code(mailer, member.email) not in text
    result = await audit.verify_chain(p, admin)
    assert result.ok
    assert result.checked == len(events)


async def test_verify_reports_the_first_tampered_event(p: Platform, mailer: InMemoryMailer) -> None:
    admin, _, code = await org_with_member(p, mailer)
    await tokens.create_token(p, admin, code, "w1")
    log = p.audit
    assert isinstance(log, InMemoryAuditLog)
    events = log._events
    events[2] = attrs.evolve(events[2], actor="someone-else")
    result = await audit.verify_chain(p, admin)
    assert not result.ok
    assert result.broken is not None
    assert result.broken.id == events[2].id
    assert result.position == 2
    del events[2]  # a removed event breaks the link of the one after it
    again = await audit.verify_chain(p, admin)
    assert again.position == 2


async def test_trails_are_filtered_paged_and_scoped(
    p: Platform, mailer: InMemoryMailer, clock: FakeClock
) -> None:
    admin, member, code = await org_with_member(p, mailer)
    start = clock.now()
    for n in range(5):
        clock.advance(1)
        await tokens.create_token(p, admin, code, f"w{n}")
    page = await audit.my_trail(p, admin, audit.Query(verb="token.create", limit=2))
    assert len(page.items) == 2
    assert page.next_cursor
    rest = await audit.my_trail(
        p, admin, audit.Query(verb="token.create", limit=10, cursor=page.next_cursor)
    )
    assert len(rest.items) == 3
    assert rest.next_cursor is None
    mine = await audit.my_trail(p, member, audit.Query(actor=admin.user_id))
    assert {e.actor for e in mine.items} == {member.user_id}
    with pytest.raises(Forbidden):
        await audit.org_trail(p, member, code, audit.Query())
    window = await audit.org_trail(
        p,
        admin,
        code,
        audit.Query(since=start + timedelta(seconds=2), until=start + timedelta(seconds=4)),
    )
    assert [e.data["name"] for e in window.items] == ["w1", "w2"]
    by_actor = await audit.org_trail(p, admin, code, audit.Query(actor=member.user_id))
    # The member's refused attempt to read the trail is in it too.
    assert [(e.verb, e.outcome) for e in by_actor.items] == [
        ("invitation.accept", Outcome.SUCCESS),
        ("audit.org", Outcome.FAILURE),
    ]
    by_email = await audit.org_trail(p, admin, code, audit.Query(actor=member.email))
    assert by_email.items == by_actor.items
    assert await audit.actor_emails(p, by_actor.items) == {member.user_id: member.email}
    # Actors that are not users (an anonymous caller here) have no email.
    anonymous = attrs.evolve(by_actor.items[0], actor="anonymous@127.0.0.1")
    assert await audit.actor_emails(p, [anonymous]) == {}
    by_type = await audit.org_trail(p, admin, code, audit.Query(resource_type="invitation"))
    assert [e.verb for e in by_type.items] == ["org.invite", "invitation.accept"]
