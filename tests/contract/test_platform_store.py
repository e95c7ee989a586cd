"""Contract of the platform data: the UnitOfWork and every repository it holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql import tables
from adapters.sql.engine import create_engine
from adapters.sql.health import SqlHealthCheck
from adapters.sql.migrate import current_revision, migrate
from adapters.sql.repositories import SqlUnitOfWork
from adapters.sql.tables import metadata
from domain.automations import (
    CREATED_WITH,
    PhaseResult,
    PhaseStatus,
    RunStatus,
    claim,
    extend_lease,
    reclaim,
    transition,
)
from domain.errors import Conflict, Invalid, NotFound, Unavailable
from domain.orgs import InvitationStatus, MemberType
from domain.outbox import OutboxMessage
from domain.permissions import Action, Grant, Resource
from domain.ports import RunFilter, UnitOfWork, UnitOfWorkFactory
from domain.resources import AutomationSpec, Phase
from domain.templates import (
    ALL_TEMPLATE_RIGHTS,
    Template,
    TemplateInvitationStatus,
    TemplateRight,
)
from domain.users import CodePurpose
from tests.contract import builders as b
from tests.contract.builders import at, uid


@pytest.fixture
async def uow(uow_factory: UnitOfWorkFactory) -> AsyncIterator[UnitOfWork]:
    async with uow_factory() as unit:
        yield unit


# ---------------------------------------------------------------- unit of work


async def test_committed_changes_are_visible_to_the_next_unit(
        uow_factory: UnitOfWorkFactory) -> None:
    user = b.user()
    async with uow_factory() as uow:
        await uow.users.add(user)
        assert await uow.users.get(user.id) == user
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.users.get(user.id) == user


async def test_leaving_without_commit_discards_the_changes(
        uow_factory: UnitOfWorkFactory) -> None:
    user = b.user()
    async with uow_factory() as uow:
        await uow.users.add(user)
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.users.get(user.id)


async def test_rollback_discards_and_the_unit_stays_usable(
        uow_factory: UnitOfWorkFactory) -> None:
    kept, dropped = b.user(), b.user()
    async with uow_factory() as uow:
        await uow.users.add(kept)
        await uow.commit()
        await uow.users.add(dropped)
        await uow.rollback()
        with pytest.raises(NotFound):
            await uow.users.get(dropped.id)
        assert await uow.users.get(kept.id) == kept


async def test_an_error_inside_the_block_discards_the_changes(
        uow_factory: UnitOfWorkFactory) -> None:
    user = b.user()

    async def fail_half_way() -> None:
        async with uow_factory() as uow:
            await uow.users.add(user)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail_half_way()
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.users.get(user.id)


# ---------------------------------------------------------------- users


async def test_users_add_get_and_find_by_email_ignoring_case(uow: UnitOfWork) -> None:
    user = b.user(email_verified_at=at(5))
    await uow.users.add(user)
    assert await uow.users.get(user.id) == user
    assert await uow.users.by_email(user.email.upper()) == user
    with pytest.raises(NotFound):
        await uow.users.get(uid("usr"))
    with pytest.raises(NotFound):
        await uow.users.by_email(f"{uid('nobody')}@example.com")


async def test_users_conflict_on_id_or_email(uow: UnitOfWork) -> None:
    user = b.user()
    await uow.users.add(user)
    with pytest.raises(Conflict):
        await uow.users.add(b.user(id=user.id))
    with pytest.raises(Conflict):
        await uow.users.add(b.user(email=user.email.swapcase()))


async def test_users_update(uow: UnitOfWork) -> None:
    user, other = b.user(), b.user()
    await uow.users.add(user)
    await uow.users.add(other)
    changed = attrs.evolve(user, email=f"{uid('new')}@example.org", disabled_at=at(9))
    await uow.users.update(changed)
    assert await uow.users.get(user.id) == changed
    with pytest.raises(Conflict):
        await uow.users.update(attrs.evolve(changed, email=other.email.upper()))
    with pytest.raises(NotFound):
        await uow.users.update(b.user())


async def test_datetimes_come_back_aware_and_equal(uow: UnitOfWork) -> None:
    plus_two = timezone(timedelta(hours=2))
    user = b.user(created_at=at(1).astimezone(plus_two))
    await uow.users.add(user)
    stored = await uow.users.get(user.id)
    assert stored.created_at == at(1)
    assert stored.created_at.utcoffset() is not None
    assert stored.created_at.astimezone(UTC).microsecond == at(1).microsecond


# ---------------------------------------------------------------- orgs and members


async def test_orgs_add_get_and_find_by_code_ignoring_case(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    assert await uow.orgs.get(org.id) == org
    assert await uow.orgs.by_code(org.code.lower()) == org
    with pytest.raises(Conflict):
        await uow.orgs.add(b.org(id=org.id))
    with pytest.raises(Conflict):
        await uow.orgs.add(b.org(code=org.code.lower()))
    with pytest.raises(NotFound):
        await uow.orgs.get(uid("org"))
    with pytest.raises(NotFound):
        await uow.orgs.by_code(uid("code"))


async def test_orgs_are_found_by_id_or_code_and_an_id_wins(uow: UnitOfWork) -> None:
    org = b.org(code=uid("Acme"))
    # Another org, added first, whose code reads like the first one's id: the id wins.
    await uow.orgs.add(b.org(code=org.id))
    await uow.orgs.add(org)
    assert await uow.orgs.find(org.id) == org
    assert await uow.orgs.find(org.code.lower()) == org
    with pytest.raises(NotFound, match="not found"):
        await uow.orgs.find(uid("org"))


async def test_an_org_is_found_with_a_members_membership_by_id_or_code(
        uow: UnitOfWork) -> None:
    org, alice, bob = b.org(code=uid("Acme")), b.user(), b.user()
    # Another org whose code reads like the first one's id, alice a member of both: the id wins.
    other = b.org(code=org.id)
    await uow.orgs.add(other)
    await uow.orgs.add(org)
    await uow.users.add(alice)
    await uow.users.add(bob)
    mine = b.membership(org.id, alice.id, MemberType.ADMIN, joined=1)
    await uow.orgs.add_member(mine)
    await uow.orgs.add_member(b.membership(other.id, alice.id, joined=2))
    assert await uow.orgs.find_member(org.id, alice.id) == (org, mine)
    assert await uow.orgs.find_member(org.code.lower(), alice.id) == (org, mine)
    # Bob is a member of the org the code names, not of the one the id names.
    await uow.orgs.add_member(b.membership(other.id, bob.id, joined=3))
    with pytest.raises(NotFound):
        await uow.orgs.find_member(org.id, bob.id)
    with pytest.raises(NotFound, match="not found"):
        await uow.orgs.find_member(uid("org"), alice.id)


async def test_members_add_update_list_and_remove(uow: UnitOfWork) -> None:
    org, alice, bob = b.org(), b.user(), b.user()
    await uow.orgs.add(org)
    await uow.users.add(alice)
    await uow.users.add(bob)
    first = b.membership(org.id, alice.id, MemberType.ADMIN, joined=1)
    second = b.membership(org.id, bob.id, joined=2)
    await uow.orgs.add_member(first)
    await uow.orgs.add_member(second)
    with pytest.raises(Conflict):
        await uow.orgs.add_member(first)
    assert await uow.orgs.member(org.id, alice.id) == first
    assert await uow.orgs.members(org.id) == [first, second]

    promoted = attrs.evolve(second, type=MemberType.MANAGER)
    await uow.orgs.update_member(promoted)
    assert await uow.orgs.member(org.id, bob.id) == promoted

    await uow.orgs.remove_member(org.id, bob.id)
    assert await uow.orgs.members(org.id) == [first]
    with pytest.raises(NotFound):
        await uow.orgs.member(org.id, bob.id)
    with pytest.raises(NotFound):
        await uow.orgs.remove_member(org.id, bob.id)
    with pytest.raises(NotFound):
        await uow.orgs.update_member(promoted)


async def test_units_of_work_that_lock_an_org_take_turns(
        uow_factory: UnitOfWorkFactory) -> None:
    org = b.org()
    async with uow_factory() as uow:
        await uow.orgs.add(org)
        await uow.commit()
    order: list[str] = []

    async def second() -> None:
        async with uow_factory() as uow:
            await uow.orgs.lock(org.id)
            order.append("second holds it")
            await uow.commit()

    async with uow_factory() as uow:
        await uow.orgs.lock(org.id)
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0.2)
        order.append("first ends")
        await uow.commit()
    await asyncio.wait_for(waiting, 10)
    assert order == ["first ends", "second holds it"]
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.orgs.lock(uid("org"))


async def test_a_member_needs_an_existing_org_and_user(uow: UnitOfWork) -> None:
    org, user = b.org(), b.user()
    await uow.orgs.add(org)
    await uow.users.add(user)
    with pytest.raises(NotFound):
        await uow.orgs.add_member(b.membership(org.id, uid("usr")))
    with pytest.raises(NotFound):
        await uow.orgs.add_member(b.membership(uid("org"), user.id))


async def test_orgs_of_a_user_by_name(uow: UnitOfWork) -> None:
    user = b.user()
    await uow.users.add(user)
    zeta, alpha, other = b.org(name="Zeta Team"), b.org(name="Alpha Team"), b.org()
    for org in (zeta, alpha, other):
        await uow.orgs.add(org)
    for org in (zeta, alpha):
        await uow.orgs.add_member(b.membership(org.id, user.id))
    assert await uow.orgs.of_user(user.id) == [alpha, zeta]
    assert await uow.orgs.of_user(uid("usr")) == []


async def test_deleting_an_org_removes_members_roles_and_tokens(uow: UnitOfWork) -> None:
    org, user = b.org(), b.user()
    await uow.orgs.add(org)
    await uow.users.add(user)
    await uow.orgs.add_member(b.membership(org.id, user.id))
    role, token = b.role(org.id), b.token(org.id)
    await uow.roles.add(role)
    await uow.roles.assign(org.id, user.id, role.id)
    await uow.tokens.add(token)
    await uow.roles.assign_token(token.id, role.id)
    invitation = b.invitation(org.id)
    await uow.invitations.add(invitation)

    await uow.orgs.delete(org.id)
    with pytest.raises(NotFound):
        await uow.orgs.get(org.id)
    with pytest.raises(NotFound):
        await uow.orgs.member(org.id, user.id)
    with pytest.raises(NotFound):
        await uow.roles.get(role.id)
    with pytest.raises(NotFound):
        await uow.tokens.get(token.id)
    assert await uow.roles.of_member(org.id, user.id) == []
    assert await uow.roles.of_token(token.id) == []
    with pytest.raises(NotFound):
        await uow.invitations.get(invitation.id)
    with pytest.raises(NotFound):
        await uow.invitations.by_code_hash(invitation.code_hash)
    assert await uow.invitations.of_org(org.id) == []
    assert await uow.invitations.for_email(invitation.email) == []
    assert await uow.users.get(user.id) == user
    with pytest.raises(NotFound):
        await uow.orgs.delete(org.id)


# ---------------------------------------------------------------- roles


async def _org_with_member(uow: UnitOfWork) -> tuple[str, str]:
    org, user = b.org(), b.user()
    await uow.orgs.add(org)
    await uow.users.add(user)
    await uow.orgs.add_member(b.membership(org.id, user.id))
    return org.id, user.id


async def test_roles_keep_their_grant_bitmasks(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    role = b.role(org_id)
    await uow.roles.add(role)
    stored = await uow.roles.get(role.id)
    assert stored == role
    assert stored.grants[Resource.TEMPLATES].deny == Action.DELETE
    with pytest.raises(NotFound):
        await uow.roles.get(uid("role"))


async def test_role_names_are_unique_per_org(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    other_org, _ = await _org_with_member(uow)
    role = b.role(org_id, name="Deployers")
    await uow.roles.add(role)
    with pytest.raises(Conflict):
        await uow.roles.add(b.role(org_id, name="Deployers"))
    with pytest.raises(Conflict):
        await uow.roles.add(attrs.evolve(b.role(org_id), id=role.id))
    await uow.roles.add(b.role(other_org, name="Deployers"))
    with pytest.raises(NotFound):
        await uow.roles.add(b.role(uid("org")))


async def test_roles_update_delete_and_list(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    beta, alpha = b.role(org_id, name="beta"), b.role(org_id, name="alpha")
    await uow.roles.add(beta)
    await uow.roles.add(alpha)
    assert await uow.roles.of_org(org_id) == [alpha, beta]

    changed = attrs.evolve(beta, name="gamma", grants={Resource.ORG: Grant(allow=Action.MANAGE)})
    await uow.roles.update(changed)
    assert await uow.roles.get(beta.id) == changed
    with pytest.raises(Conflict):
        await uow.roles.update(attrs.evolve(changed, name="alpha"))
    with pytest.raises(NotFound):
        await uow.roles.update(b.role(org_id))

    await uow.roles.delete(alpha.id)
    assert await uow.roles.of_org(org_id) == [changed]
    with pytest.raises(NotFound):
        await uow.roles.delete(alpha.id)


async def test_role_assignments(uow: UnitOfWork) -> None:
    org_id, user_id = await _org_with_member(uow)
    other_org, _ = await _org_with_member(uow)
    ops, viewers, foreign = b.role(org_id, "ops"), b.role(org_id, "viewers"), b.role(other_org)
    for role in (ops, viewers, foreign):
        await uow.roles.add(role)

    await uow.roles.assign(org_id, user_id, viewers.id)
    await uow.roles.assign(org_id, user_id, ops.id)
    await uow.roles.assign(org_id, user_id, ops.id)
    assert await uow.roles.of_member(org_id, user_id) == [ops, viewers]
    # A role without grants is one of them too.
    bare = attrs.evolve(b.role(org_id, "bare"), grants={})
    await uow.roles.add(bare)
    await uow.roles.assign(org_id, user_id, bare.id)
    assert await uow.roles.of_member(org_id, user_id) == [bare, ops, viewers]
    await uow.roles.unassign(org_id, user_id, bare.id)

    with pytest.raises(NotFound):
        await uow.roles.assign(org_id, uid("usr"), ops.id)
    with pytest.raises(NotFound):
        await uow.roles.assign(org_id, user_id, uid("role"))
    with pytest.raises(NotFound):
        await uow.roles.assign(org_id, user_id, foreign.id)

    await uow.roles.unassign(org_id, user_id, viewers.id)
    await uow.roles.unassign(org_id, user_id, viewers.id)
    assert await uow.roles.of_member(org_id, user_id) == [ops]

    await uow.roles.delete(ops.id)
    assert await uow.roles.of_member(org_id, user_id) == []


async def test_removing_a_member_drops_their_role_assignments(uow: UnitOfWork) -> None:
    org_id, user_id = await _org_with_member(uow)
    role = b.role(org_id)
    await uow.roles.add(role)
    await uow.roles.assign(org_id, user_id, role.id)
    await uow.orgs.remove_member(org_id, user_id)
    await uow.orgs.add_member(b.membership(org_id, user_id))
    assert await uow.roles.of_member(org_id, user_id) == []


# ---------------------------------------------------------------- tokens


async def test_tokens(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    ci, backup = b.token(org_id, "ci"), b.token(org_id, "backup")
    await uow.tokens.add(ci)
    await uow.tokens.add(backup)
    assert await uow.tokens.get(ci.id) == ci
    assert await uow.tokens.of_org(org_id) == [backup, ci]
    with pytest.raises(Conflict):
        await uow.tokens.add(ci)
    with pytest.raises(NotFound):
        await uow.tokens.add(b.token(uid("org")))

    revoked = attrs.evolve(ci, revoked_at=at(60))
    await uow.tokens.update(revoked)
    assert await uow.tokens.get(ci.id) == revoked
    with pytest.raises(NotFound):
        await uow.tokens.update(b.token(org_id))
    with pytest.raises(NotFound):
        await uow.tokens.get(uid("tok"))

    rotated = attrs.evolve(backup, secret_hash="new-hash", rotated_at=at(90))
    await uow.tokens.update(rotated)
    assert await uow.tokens.get(backup.id) == rotated


async def test_token_role_assignments(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    other_org, _ = await _org_with_member(uow)
    ops, viewers, foreign = b.role(org_id, "ops"), b.role(org_id, "viewers"), b.role(other_org)
    for role in (ops, viewers, foreign):
        await uow.roles.add(role)
    token, other = b.token(org_id), b.token(org_id, "other")
    await uow.tokens.add(token)
    await uow.tokens.add(other)
    assert await uow.roles.of_token(token.id) == []

    await uow.roles.assign_token(token.id, viewers.id)
    await uow.roles.assign_token(token.id, ops.id)
    await uow.roles.assign_token(token.id, ops.id)
    assert await uow.roles.of_token(token.id) == [ops, viewers]
    assert await uow.roles.of_token(other.id) == []
    assert await uow.roles.of_token(uid("tok")) == []

    await uow.roles.unassign_token(token.id, viewers.id)
    await uow.roles.unassign_token(token.id, viewers.id)
    await uow.roles.unassign_token(uid("tok"), uid("role"))
    assert await uow.roles.of_token(token.id) == [ops]


async def test_assigning_a_token_a_role_needs_both_in_one_org(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    other_org, _ = await _org_with_member(uow)
    role, foreign = b.role(org_id), b.role(other_org)
    await uow.roles.add(role)
    await uow.roles.add(foreign)
    token = b.token(org_id)
    await uow.tokens.add(token)

    with pytest.raises(NotFound):
        await uow.roles.assign_token(uid("tok"), role.id)
    with pytest.raises(NotFound):
        await uow.roles.assign_token(token.id, uid("role"))
    with pytest.raises(Invalid):
        await uow.roles.assign_token(token.id, foreign.id)
    assert await uow.roles.of_token(token.id) == []


async def test_token_role_assignments_follow_role_changes_and_deletion(uow: UnitOfWork) -> None:
    org_id, _ = await _org_with_member(uow)
    ops, viewers = b.role(org_id, "ops"), b.role(org_id, "viewers")
    await uow.roles.add(ops)
    await uow.roles.add(viewers)
    token = b.token(org_id)
    await uow.tokens.add(token)
    await uow.roles.assign_token(token.id, ops.id)
    await uow.roles.assign_token(token.id, viewers.id)

    changed = attrs.evolve(ops, grants={Resource.ORG: Grant(allow=Action.VIEW)})
    await uow.roles.update(changed)
    assert await uow.roles.of_token(token.id) == [changed, viewers]

    await uow.roles.delete(viewers.id)
    assert await uow.roles.of_token(token.id) == [changed]
    # A role recreated under the same name is a new role: the assignment did not survive.
    again = b.role(org_id, "viewers")
    await uow.roles.add(again)
    assert await uow.roles.of_token(token.id) == [changed]


async def test_token_role_assignments_are_committed_with_the_unit(
        uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        org_id, _ = await _org_with_member(uow)
        role, token = b.role(org_id), b.token(org_id)
        await uow.roles.add(role)
        await uow.tokens.add(token)
        await uow.commit()
    async with uow_factory() as uow:
        await uow.roles.assign_token(token.id, role.id)
    async with uow_factory() as uow:
        assert await uow.roles.of_token(token.id) == []
        await uow.roles.assign_token(token.id, role.id)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.roles.of_token(token.id) == [role]


# ---------------------------------------------------------------- multi-factor authentication


async def _user(uow: UnitOfWork) -> str:
    user = b.user()
    await uow.users.add(user)
    return user.id


async def test_mfa_enrolment_add_and_read_back(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    enrolment = b.enrolment(user_id)
    await uow.mfa.add(enrolment)
    assert await uow.mfa.of_user(user_id) == enrolment
    with pytest.raises(NotFound):
        await uow.mfa.of_user(await _user(uow))
    with pytest.raises(NotFound):
        await uow.mfa.of_user(uid("usr"))
    with pytest.raises(NotFound):
        await uow.mfa.add(b.enrolment(uid("usr")))


async def test_mfa_add_replaces_an_unconfirmed_enrolment_only(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    first = b.enrolment(user_id)
    await uow.mfa.add(first)
    second = b.enrolment(user_id, created_at=at(10))
    await uow.mfa.add(second)
    assert await uow.mfa.of_user(user_id) == second

    confirmed = attrs.evolve(second, confirmed_at=at(20), last_step=58_000_123)
    await uow.mfa.update(confirmed)
    assert await uow.mfa.of_user(user_id) == confirmed
    assert (await uow.mfa.of_user(user_id)).active
    with pytest.raises(Conflict):
        await uow.mfa.add(b.enrolment(user_id, created_at=at(30)))
    assert await uow.mfa.of_user(user_id) == confirmed


async def test_mfa_update_and_delete_need_an_enrolment(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    with pytest.raises(NotFound):
        await uow.mfa.update(b.enrolment(user_id))
    with pytest.raises(NotFound):
        await uow.mfa.delete(user_id)
    with pytest.raises(NotFound):
        await uow.mfa.of_user(user_id)


async def test_mfa_delete_removes_the_enrolment_and_recovery_codes(uow: UnitOfWork) -> None:
    user_id, other_id = await _user(uow), await _user(uow)
    await uow.mfa.add(b.enrolment(user_id, confirmed_at=at(1)))
    await uow.mfa.add(b.enrolment(other_id, confirmed_at=at(1)))
    await uow.mfa.set_recovery_codes(user_id, ["h1", "h2"])
    await uow.mfa.set_recovery_codes(other_id, ["h1", "h2"])

    await uow.mfa.delete(user_id)
    with pytest.raises(NotFound):
        await uow.mfa.of_user(user_id)
    assert await uow.mfa.recovery_codes_left(user_id) == 0
    assert not await uow.mfa.use_recovery_code(user_id, "h1", at(2))
    with pytest.raises(NotFound):
        await uow.mfa.delete(user_id)
    # A new enrolment starts afresh, and the other user kept everything.
    await uow.mfa.add(b.enrolment(user_id))
    assert await uow.mfa.recovery_codes_left(other_id) == 2


async def test_recovery_codes_are_single_use(uow: UnitOfWork) -> None:
    user_id, other_id = await _user(uow), await _user(uow)
    await uow.mfa.add(b.enrolment(user_id, confirmed_at=at(1)))
    assert await uow.mfa.recovery_codes_left(user_id) == 0
    await uow.mfa.set_recovery_codes(user_id, ["h1", "h2", "h3"])
    assert await uow.mfa.recovery_codes_left(user_id) == 3

    assert await uow.mfa.use_recovery_code(user_id, "h2", at(5))
    assert not await uow.mfa.use_recovery_code(user_id, "h2", at(6))
    assert not await uow.mfa.use_recovery_code(user_id, "unknown", at(6))
    assert not await uow.mfa.use_recovery_code(other_id, "h1", at(6))
    assert not await uow.mfa.use_recovery_code(uid("usr"), "h1", at(6))
    assert await uow.mfa.recovery_codes_left(user_id) == 2
    assert await uow.mfa.recovery_codes_left(other_id) == 0


async def test_setting_recovery_codes_replaces_every_old_one(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    await uow.mfa.add(b.enrolment(user_id, confirmed_at=at(1)))
    await uow.mfa.set_recovery_codes(user_id, ["old1", "old2"])
    assert await uow.mfa.use_recovery_code(user_id, "old1", at(2))

    await uow.mfa.set_recovery_codes(user_id, ["new1", "new2", "new3", "old1"])
    assert await uow.mfa.recovery_codes_left(user_id) == 4
    assert not await uow.mfa.use_recovery_code(user_id, "old2", at(3))
    # A hash given again is a fresh code: the old one's use does not carry over.
    assert await uow.mfa.use_recovery_code(user_id, "old1", at(3))

    await uow.mfa.set_recovery_codes(user_id, [])
    assert await uow.mfa.recovery_codes_left(user_id) == 0
    with pytest.raises(NotFound):
        await uow.mfa.set_recovery_codes(uid("usr"), ["h"])


async def test_of_two_concurrent_uses_of_a_recovery_code_one_succeeds(
        uow_factory: UnitOfWorkFactory) -> None:
    async with uow_factory() as uow:
        user_id = await _user(uow)
        await uow.mfa.add(b.enrolment(user_id, confirmed_at=at(1)))
        await uow.mfa.set_recovery_codes(user_id, ["h1", "h2"])
        await uow.commit()

    async def use() -> bool:
        async with uow_factory() as uow:
            used = await uow.mfa.use_recovery_code(user_id, "h1", at(2))
            await asyncio.sleep(0.01)
            await uow.commit()
            return used

    assert sorted(await asyncio.gather(use(), use())) == [False, True]
    async with uow_factory() as uow:
        assert await uow.mfa.recovery_codes_left(user_id) == 1


# ---------------------------------------------------------------- one-time codes


async def test_codes_add_and_find_by_purpose_and_hash(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    code = b.code(user_id, CodePurpose.RESET_PASSWORD)
    await uow.codes.add(code)
    stored = await uow.codes.by_hash(CodePurpose.RESET_PASSWORD, code.code_hash)
    assert stored == code
    assert stored.usable(at(1))
    assert not stored.usable(at(3600))
    with pytest.raises(NotFound):
        await uow.codes.by_hash(CodePurpose.VERIFY_EMAIL, code.code_hash)
    with pytest.raises(NotFound):
        await uow.codes.by_hash(CodePurpose.RESET_PASSWORD, uid("sha256"))
    with pytest.raises(Conflict):
        await uow.codes.add(attrs.evolve(code, code_hash=uid("sha256")))
    with pytest.raises(NotFound):
        await uow.codes.add(b.code(uid("usr")))


async def test_codes_update(uow: UnitOfWork) -> None:
    user_id = await _user(uow)
    code = b.code(user_id)
    await uow.codes.add(code)
    used = attrs.evolve(code, used_at=at(30))
    await uow.codes.update(used)
    assert await uow.codes.by_hash(code.purpose, code.code_hash) == used
    assert not used.usable(at(31))
    with pytest.raises(NotFound):
        await uow.codes.update(b.code(user_id))


async def test_retire_uses_up_every_unused_code_of_that_user_and_purpose(
        uow: UnitOfWork) -> None:
    user_id, other_id = await _user(uow), await _user(uow)
    old, older = b.code(user_id, created=10), b.code(user_id, created=0)
    spent = b.code(user_id, created=5, used_at=at(6))
    reset = b.code(user_id, CodePurpose.RESET_PASSWORD, created=10)
    others = b.code(other_id, created=10)
    for code in (old, older, spent, reset, others):
        await uow.codes.add(code)

    await uow.codes.retire(user_id, CodePurpose.VERIFY_EMAIL, at(20))
    assert await uow.codes.by_hash(old.purpose, old.code_hash) == attrs.evolve(
        old, used_at=at(20))
    assert await uow.codes.by_hash(older.purpose, older.code_hash) == attrs.evolve(
        older, used_at=at(20))
    assert await uow.codes.by_hash(spent.purpose, spent.code_hash) == spent
    assert await uow.codes.by_hash(reset.purpose, reset.code_hash) == reset
    assert await uow.codes.by_hash(others.purpose, others.code_hash) == others

    newer = b.code(user_id, created=21)
    await uow.codes.add(newer)
    assert (await uow.codes.by_hash(newer.purpose, newer.code_hash)).usable(at(22))
    await uow.codes.retire(uid("usr"), CodePurpose.VERIFY_EMAIL, at(23))


async def test_codes_issued_to_many_accounts_at_once_all_commit(
        uow_factory: UnitOfWorkFactory) -> None:
    """Issuing retires the account's older codes, then adds one: accounts signing up together
    must not deadlock each other (on InnoDB, gap locks of the retiring update would)."""
    async with uow_factory() as uow:
        users = [await _user(uow) for _ in range(8)]
        await uow.commit()

    async def issue(user_id: str) -> None:
        async with uow_factory() as uow:
            await uow.codes.retire(user_id, CodePurpose.VERIFY_EMAIL, at(1))
            await asyncio.sleep(0.01)
            await uow.codes.add(b.code(user_id, created=1))
            await uow.commit()

    await asyncio.gather(*(issue(u) for u in users))


# ---------------------------------------------------------------- invitations


async def test_invitations_add_get_and_find_by_code(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    invitation = b.invitation(org.id, member_type=MemberType.MANAGER)
    await uow.invitations.add(invitation)
    assert await uow.invitations.get(invitation.id) == invitation
    assert await uow.invitations.by_code_hash(invitation.code_hash) == invitation
    with pytest.raises(NotFound):
        await uow.invitations.get(uid("inv"))
    with pytest.raises(NotFound):
        await uow.invitations.by_code_hash(uid("sha256"))
    with pytest.raises(Conflict):
        await uow.invitations.add(b.invitation(org.id, id=invitation.id))
    with pytest.raises(NotFound):
        await uow.invitations.add(b.invitation(uid("org")))


async def test_one_pending_invitation_per_org_and_email_ignoring_case(
        uow: UnitOfWork) -> None:
    org, other_org = b.org(), b.org()
    await uow.orgs.add(org)
    await uow.orgs.add(other_org)
    first = b.invitation(org.id)
    await uow.invitations.add(first)
    with pytest.raises(Conflict):
        await uow.invitations.add(b.invitation(org.id, first.email.swapcase(), created=1))
    elsewhere = b.invitation(other_org.id, first.email, created=1)
    await uow.invitations.add(elsewhere)

    # Once answered, the email can be invited again; answered ones do not block each other.
    for n, status in enumerate((InvitationStatus.REJECTED, InvitationStatus.CANCELLED)):
        [pending] = [i for i in await uow.invitations.for_email(first.email)
                     if i.org_id == org.id]
        await uow.invitations.update(attrs.evolve(pending, status=status, answered_at=at(2)))
        await uow.invitations.add(b.invitation(org.id, first.email.upper(), created=3 + n))
    assert [i.status for i in await uow.invitations.of_org(org.id)] == [
        InvitationStatus.REJECTED, InvitationStatus.CANCELLED, InvitationStatus.PENDING]

    # Reopening an answered invitation would make a second pending one.
    with pytest.raises(Conflict):
        await uow.invitations.update(first)


async def test_invitations_for_an_email_are_pending_ones_oldest_first(
        uow: UnitOfWork) -> None:
    email = f"{uid('guest')}@Example.com"
    orgs = [b.org() for _ in range(4)]
    for org in orgs:
        await uow.orgs.add(org)
    newest = b.invitation(orgs[0].id, email, created=30)
    oldest = b.invitation(orgs[1].id, email.upper(), created=10)
    middle = b.invitation(orgs[2].id, email.lower(), created=20)
    accepted = b.invitation(orgs[3].id, email, created=5)
    for invitation in (newest, oldest, middle, accepted):
        await uow.invitations.add(invitation)
    await uow.invitations.add(b.invitation(orgs[0].id, created=1))
    await uow.invitations.update(attrs.evolve(
        accepted, status=InvitationStatus.ACCEPTED, answered_at=at(6)))

    assert await uow.invitations.for_email(email.swapcase()) == [oldest, middle, newest]
    assert await uow.invitations.for_email(f"{uid('nobody')}@example.com") == []


async def test_invitations_of_an_org_and_update(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    second, first = b.invitation(org.id, created=2), b.invitation(org.id, created=1)
    await uow.invitations.add(second)
    await uow.invitations.add(first)
    assert await uow.invitations.of_org(org.id) == [first, second]
    assert await uow.invitations.of_org(uid("org")) == []

    accepted = attrs.evolve(first, status=InvitationStatus.ACCEPTED, answered_at=at(5))
    await uow.invitations.update(accepted)
    assert await uow.invitations.get(first.id) == accepted
    assert await uow.invitations.by_code_hash(first.code_hash) == accepted
    assert await uow.invitations.for_email(first.email) == []
    with pytest.raises(NotFound):
        await uow.invitations.update(b.invitation(org.id))


# ---------------------------------------------------------------- templates


async def test_templates_add_with_a_first_version(uow: UnitOfWork) -> None:
    org_id = uid("org")
    template, first = b.template(org_id=org_id)
    await uow.templates.add(template, first)
    assert await uow.templates.get(template.id) == template
    assert await uow.templates.by_name(template.name, org_id=org_id) == template
    assert await uow.templates.versions(template.id) == [first]
    assert await uow.templates.version(template.id, 1) == first
    with pytest.raises(NotFound):
        await uow.templates.get(uid("tpl"))
    with pytest.raises(NotFound):
        await uow.templates.version(template.id, 2)
    with pytest.raises(NotFound):
        await uow.templates.by_name(template.name, org_id=uid("org"))


async def test_template_names_are_unique_per_owner(uow: UnitOfWork) -> None:
    org_id, user_id = uid("org"), uid("usr")
    org_tpl, v1 = b.template(org_id=org_id, owner_id=user_id, name="backup")
    await uow.templates.add(org_tpl, v1)
    with pytest.raises(Conflict):
        await uow.templates.add(*b.template(org_id=org_id, name="backup"))
    with pytest.raises(Conflict):
        await uow.templates.add(attrs.evolve(b.template(org_id=org_id)[0], id=org_tpl.id), v1)

    mine, mine_v1 = b.template(owner_id=user_id, name="backup")
    other_org, other_v1 = b.template(org_id=uid("org"), name="backup")
    await uow.templates.add(mine, mine_v1)
    await uow.templates.add(other_org, other_v1)
    with pytest.raises(Conflict):
        await uow.templates.add(*b.template(owner_id=user_id, name="backup"))

    assert await uow.templates.by_name("backup", owner_id=user_id) == mine
    assert await uow.templates.by_name("backup", org_id=org_id) == org_tpl
    assert await uow.templates.list(owner_id=user_id) == [mine]
    assert await uow.templates.list(org_id=org_id) == [org_tpl]


async def test_a_template_in_an_org_is_found_by_id_or_name_and_an_id_wins(
        uow: UnitOfWork) -> None:
    org_id = uid("org")
    ours, v1 = b.template(org_id=org_id)
    await uow.templates.add(ours, v1)
    # Another org's template, and one of ours named like it: its id still finds it.
    theirs, v1 = b.template(org_id=uid("org"))
    await uow.templates.add(theirs, v1)
    named_like, v1 = b.template(org_id=org_id, name=theirs.id)
    await uow.templates.add(named_like, v1)
    assert await uow.templates.in_org(ours.id, org_id) == ours
    assert await uow.templates.in_org(ours.name, org_id) == ours
    assert await uow.templates.in_org(theirs.id, org_id) == theirs
    with pytest.raises(NotFound):
        await uow.templates.in_org(theirs.name, org_id)  # a name only counts in the org
    with pytest.raises(NotFound, match="not found"):
        await uow.templates.in_org(uid("tpl"), org_id)


async def test_template_versions_conflict_on_a_taken_number(uow: UnitOfWork) -> None:
    template, first = b.template(org_id=uid("org"))
    await uow.templates.add(template, first)
    second = b.version(template.id, 2)
    await uow.templates.add_version(second)
    with pytest.raises(Conflict):
        await uow.templates.add_version(b.version(template.id, 2))
    with pytest.raises(NotFound):
        await uow.templates.add_version(b.version(uid("tpl"), 1))
    assert await uow.templates.versions(template.id) == [first, second]


async def test_templates_update_list_and_delete(uow: UnitOfWork) -> None:
    org_id = uid("org")
    zulu, v_zulu = b.template(org_id=org_id, name="zulu")
    alpha, v_alpha = b.template(org_id=org_id, name="alpha")
    await uow.templates.add(zulu, v_zulu)
    await uow.templates.add(alpha, v_alpha)
    assert await uow.templates.list(org_id=org_id) == [alpha, zulu]

    changed = attrs.evolve(zulu, latest_version=2, default_version=2, description="new")
    await uow.templates.update(changed)
    assert await uow.templates.get(zulu.id) == changed
    with pytest.raises(Conflict):
        await uow.templates.update(attrs.evolve(changed, name="alpha"))
    with pytest.raises(NotFound):
        await uow.templates.update(b.template(org_id=org_id)[0])

    await uow.templates.delete(zulu.id)
    assert await uow.templates.list(org_id=org_id) == [alpha]
    assert await uow.templates.versions(zulu.id) == []
    with pytest.raises(NotFound):
        await uow.templates.delete(zulu.id)


# ---------------------------------------------------------------- runs


async def test_runs_round_trip_every_field(uow: UnitOfWork) -> None:
    run = b.run(org_id=uid("org"), status=RunStatus.RUNNING, attempts=2, worker_id="wkr-1",
                started_at=at(3), reason="lease renewed", lease_expires_at=at(33),
                cancel_requested=True,
                phases=(PhaseResult("build", PhaseStatus.SUCCEEDED, 0, at(3), at(4)),
                        PhaseResult("ship", PhaseStatus.RUNNING, None, at(4))))
    await uow.runs.add(run)
    stored = await uow.runs.get(run.id)
    assert stored == run
    assert type(stored.variables["verbose"]) is bool
    assert type(stored.variables["count"]) is int
    assert type(stored.variables["ratio"]) is float
    with pytest.raises(Conflict):
        await uow.runs.add(run)
    with pytest.raises(NotFound):
        await uow.runs.get(uid("run"))


async def test_run_update_checks_the_expected_status(uow: UnitOfWork) -> None:
    run = b.run(org_id=uid("org"))
    await uow.runs.add(run)
    running = attrs.evolve(run, status=RunStatus.RUNNING, attempts=1, started_at=at(1))
    await uow.runs.update(running, expected=RunStatus.QUEUED)
    assert await uow.runs.get(run.id) == running

    with pytest.raises(Conflict):
        await uow.runs.update(attrs.evolve(running, status=RunStatus.CANCELLED),
                              expected=RunStatus.QUEUED)
    assert await uow.runs.get(run.id) == running

    await uow.runs.update(running)  # unchanged values still count as stored
    done = attrs.evolve(running, status=RunStatus.SUCCEEDED, finished_at=at(9))
    await uow.runs.update(done)
    assert await uow.runs.get(run.id) == done
    with pytest.raises(NotFound):
        await uow.runs.update(b.run())
    with pytest.raises(NotFound):
        await uow.runs.update(b.run(), expected=RunStatus.QUEUED)


async def test_run_update_keeps_what_the_run_was_created_with(uow: UnitOfWork) -> None:
    run = b.run(org_id=uid("org"), sealed_secrets="sealed")
    await uow.runs.add(run)
    state = {"status": RunStatus.RUNNING, "attempts": 1, "worker_id": "wkr-1",
             "started_at": at(1), "lease_expires_at": at(31), "grant": "signed"}
    created = {"spec": AutomationSpec(phases=(Phase("other", "alpine", ("false",)),)),
               "created_at": at(7), "name": "renamed", "org_id": uid("org"),
               "template_id": uid("tpl"), "template_version": 9, "requested_by": uid("usr"),
               "comment": "changed", "variables": {"env": "changed"}, "sealed_secrets": ""}
    assert sorted(created) == sorted(CREATED_WITH)
    await uow.runs.update(attrs.evolve(run, **state, **created), expected=RunStatus.QUEUED)
    assert await uow.runs.get(run.id) == attrs.evolve(run, **state)


async def test_of_two_concurrent_claims_on_a_run_one_conflicts(
        uow_factory: UnitOfWorkFactory) -> None:
    run = b.run(org_id=uid("org"))
    async with uow_factory() as uow:
        await uow.runs.add(run)
        await uow.commit()

    async def claim(worker_id: str) -> None:
        async with uow_factory() as uow:
            current = await uow.runs.get(run.id)
            await asyncio.sleep(0.01)
            await uow.runs.update(attrs.evolve(current, status=RunStatus.RUNNING,
                                               worker_id=worker_id), expected=RunStatus.QUEUED)
            await uow.commit()

    outcomes = await asyncio.gather(claim("w1"), claim("w2"), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
    async with uow_factory() as uow:
        stored = await uow.runs.get(run.id)
    winner = "w1" if outcomes[0] is None else "w2"
    assert (stored.status, stored.worker_id) == (RunStatus.RUNNING, winner)


async def test_run_update_checks_the_expected_attempts(uow: UnitOfWork) -> None:
    run = b.run(org_id=uid("org"))
    await uow.runs.add(run)
    held, _ = claim(run, "wkr-1", at(1), lease_seconds=30)
    await uow.runs.update(held, expected=RunStatus.QUEUED, expected_attempts=0)
    assert await uow.runs.get(run.id) == held
    assert held.attempts == 1

    extended = extend_lease(held, "wkr-1", 1, at(20), lease_seconds=30)
    # Wrong attempts with the right status, right attempts with the wrong status: both lose.
    for expected, attempts in ((RunStatus.RUNNING, 0), (RunStatus.RUNNING, 2),
                               (RunStatus.QUEUED, 1)):
        with pytest.raises(Conflict):
            await uow.runs.update(extended, expected=expected, expected_attempts=attempts)
    with pytest.raises(Conflict):
        await uow.runs.update(extended, expected_attempts=0)
    assert await uow.runs.get(run.id) == held

    await uow.runs.update(extended, expected=RunStatus.RUNNING, expected_attempts=1)
    await uow.runs.update(extended, expected_attempts=1)  # unchanged values still count
    assert await uow.runs.get(run.id) == extended
    with pytest.raises(NotFound):
        await uow.runs.update(b.run(), expected=RunStatus.QUEUED, expected_attempts=0)
    with pytest.raises(NotFound):
        await uow.runs.update(b.run(), expected_attempts=0)


async def test_a_worker_whose_run_was_claimed_again_can_no_longer_write_to_it(
        uow: UnitOfWork) -> None:
    # The status alone cannot tell the two holders apart: both see "running".
    run = b.run(org_id=uid("org"))
    await uow.runs.add(run)
    first, _ = claim(run, "wkr-1", at(1), lease_seconds=30)
    await uow.runs.update(first, expected=RunStatus.QUEUED, expected_attempts=0)
    back, _ = reclaim(first, at(40))
    await uow.runs.update(back, expected=RunStatus.RUNNING, expected_attempts=1)
    second, _ = claim(back, "wkr-2", at(41), lease_seconds=30)
    await uow.runs.update(second, expected=RunStatus.QUEUED, expected_attempts=1)

    stale, _ = transition(first, RunStatus.SUCCEEDED, at(50))
    with pytest.raises(Conflict):
        await uow.runs.update(stale, expected=RunStatus.RUNNING, expected_attempts=1)
    assert await uow.runs.get(run.id) == second
    assert (second.attempts, second.worker_id) == (2, "wkr-2")


async def test_of_two_concurrent_fenced_claims_on_a_run_exactly_one_wins(
        uow_factory: UnitOfWorkFactory) -> None:
    run = b.run(org_id=uid("org"))
    async with uow_factory() as uow:
        await uow.runs.add(run)
        await uow.commit()
    both_read = asyncio.Barrier(2)

    async def take(worker_id: str) -> None:
        # Both coordinators act on the queued run the queue announced to each of them.
        held, _ = claim(run, worker_id, at(1), lease_seconds=30)
        async with uow_factory() as uow:
            await uow.runs.get(run.id)
            # On MariaDB both units have read before either writes; SQLite and the in-memory
            # store run one writing unit at a time, so there the barrier gives up and the
            # second unit starts after the first committed.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await both_read.wait()
            await uow.runs.update(held, expected=RunStatus.QUEUED, expected_attempts=0)
            await uow.commit()

    outcomes = await asyncio.gather(take("w1"), take("w2"), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "NoneType"]
    async with uow_factory() as uow:
        stored = await uow.runs.get(run.id)
    winner = "w1" if outcomes[0] is None else "w2"
    assert (stored.status, stored.worker_id, stored.attempts) == (RunStatus.RUNNING, winner, 1)


async def test_expired_leases_are_running_runs_oldest_lease_first(uow: UnitOfWork) -> None:
    # Leases in 1990, before any other test's: the store is shared and this query is not
    # scoped to an org.
    def when(seconds: float) -> datetime:
        return datetime(1990, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=7)

    org_id = uid("org")
    late = b.run(org_id=org_id, status=RunStatus.RUNNING, attempts=1,
                 lease_expires_at=when(10))
    early = b.run(org_id=org_id, status=RunStatus.RUNNING, attempts=1,
                  lease_expires_at=when(5))
    live = b.run(org_id=org_id, status=RunStatus.RUNNING, attempts=1,
                 lease_expires_at=when(20))
    done = b.run(org_id=org_id, status=RunStatus.SUCCEEDED, lease_expires_at=when(1))
    queued = b.run(org_id=org_id, lease_expires_at=when(1))
    unleased = b.run(org_id=org_id, status=RunStatus.RUNNING)
    for run in (late, early, live, done, queued, unleased):
        await uow.runs.add(run)

    assert await uow.runs.expired_leases(when(4)) == []
    assert await uow.runs.expired_leases(when(10)) == [early, late]
    assert await uow.runs.expired_leases(when(10), limit=1) == [early]
    assert [r.id for r in await uow.runs.expired_leases(when(20))] == [
        early.id, late.id, live.id]
    # Extending the lease takes the run out of the list.
    await uow.runs.update(attrs.evolve(early, lease_expires_at=when(30)),
                          expected=RunStatus.RUNNING, expected_attempts=1)
    assert [r.id for r in await uow.runs.expired_leases(when(20))] == [late.id, live.id]
    with pytest.raises(Invalid):
        await uow.runs.expired_leases(when(20), limit=0)


async def test_queued_ahead_counts_earlier_queued_runs_of_the_same_org(
        uow: UnitOfWork) -> None:
    org_id, other_org = uid("org"), uid("org")
    first = b.run(org_id=org_id, created=1)
    # Created in the same microsecond: the id decides which is ahead.
    tied = sorted([b.run(org_id=org_id, created=2), b.run(org_id=org_id, created=2)],
                  key=lambda r: r.id)
    last = b.run(org_id=org_id, created=3)
    others = [b.run(org_id=org_id, created=0, status=RunStatus.RUNNING, attempts=1),
              b.run(org_id=org_id, created=0, status=RunStatus.SUCCEEDED),
              b.run(org_id=org_id, created=0, status=RunStatus.PENDING_APPROVAL),
              b.run(org_id=other_org, created=0)]
    for run in (last, *tied, first, *others):
        await uow.runs.add(run)

    assert await uow.runs.queued_ahead(first, 100) == 0
    assert await uow.runs.queued_ahead(tied[0], 100) == 1
    assert await uow.runs.queued_ahead(tied[1], 100) == 2
    assert await uow.runs.queued_ahead(last, 100) == 3
    assert await uow.runs.queued_ahead(b.run(org_id=org_id, created=9), 100) == 4
    assert await uow.runs.queued_ahead(others[3], 100) == 0
    # Counted up to the limit only.
    assert await uow.runs.queued_ahead(last, 2) == 2
    with pytest.raises(Invalid):
        await uow.runs.queued_ahead(last, 0)

    held, _ = claim(first, "wkr-1", at(5), lease_seconds=30)
    await uow.runs.update(held, expected=RunStatus.QUEUED, expected_attempts=0)
    assert await uow.runs.queued_ahead(last, 100) == 2


async def test_queued_orgs_names_each_org_with_queued_runs_once(uow: UnitOfWork) -> None:
    busy, idle, other = uid("org"), uid("org"), uid("org")
    for run in (b.run(org_id=busy, created=1), b.run(org_id=busy, created=2),
                b.run(org_id=other, created=3),
                b.run(org_id=idle, created=0, status=RunStatus.RUNNING, attempts=1),
                b.run(org_id=idle, created=0, status=RunStatus.SUCCEEDED)):
        await uow.runs.add(run)
    found = await uow.runs.queued_orgs(limit=1000)
    # The store may hold other tests' runs: only these orgs are looked at.
    assert sorted(o for o in found if o in (busy, idle, other)) == sorted([busy, other])
    assert len(found) == len(set(found))
    assert len(await uow.runs.queued_orgs(limit=1)) == 1
    with pytest.raises(Invalid):
        await uow.runs.queued_orgs(limit=0)


async def _page_through(uow: UnitOfWork, flt: RunFilter, limit: int) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await uow.runs.list(flt, limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        ids.extend(r.id for r in page.items)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def test_runs_list_newest_first_across_pages(uow: UnitOfWork) -> None:
    org_id = uid("org")
    runs = [b.run(org_id=org_id, created=i) for i in range(7)]
    # Two runs created in the same microsecond: the id breaks the tie.
    runs += [b.run(org_id=org_id, created=3), b.run(org_id=org_id, created=3)]
    for run in runs:
        await uow.runs.add(run)
    expected = [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]
    assert await _page_through(uow, RunFilter(org_id=org_id), limit=2) == expected
    assert await _page_through(uow, RunFilter(org_id=org_id), limit=50) == expected
    page = await uow.runs.list(RunFilter(org_id=org_id), limit=9)
    assert page.next_cursor is None
    assert (await uow.runs.list(RunFilter(org_id=uid("org")))).items == ()


async def test_runs_list_filters(uow: UnitOfWork) -> None:
    org_id, template_id, alice = uid("org"), uid("tpl"), uid("usr")
    a = b.run(org_id=org_id, created=1, template_id=template_id, requested_by=alice)
    c = b.run(org_id=org_id, created=2, status=RunStatus.FAILED, requested_by=alice)
    d = b.run(org_id=org_id, created=3, status=RunStatus.SUCCEEDED, template_id=template_id)
    for run in (a, c, d):
        await uow.runs.add(run)

    async def ids(**kw: object) -> list[str]:
        return await _page_through(uow, RunFilter(org_id=org_id, **kw), limit=50)  # type: ignore[arg-type]

    assert await ids(template_id=template_id) == [d.id, a.id]
    assert await ids(requested_by=alice) == [c.id, a.id]
    assert await ids(statuses=(RunStatus.FAILED, RunStatus.SUCCEEDED)) == [d.id, c.id]
    assert await ids(statuses=(RunStatus.QUEUED,)) == [a.id]
    assert await ids(created_after=at(2)) == [d.id, c.id]
    assert await ids(created_before=at(2)) == [a.id]
    assert await ids(created_after=at(1), created_before=at(3)) == [c.id, a.id]


async def test_a_foreign_cursor_is_invalid(uow: UnitOfWork) -> None:
    with pytest.raises(Invalid):
        await uow.runs.list(RunFilter(), cursor="not a cursor!")


# ---------------------------------------------------------------- outbox


async def test_outbox_pending_is_unpublished_messages_oldest_first(uow: UnitOfWork) -> None:
    # Created in 1990, before any other test's messages: pending() is not scoped by topic.
    def old(seconds: float) -> OutboxMessage:
        return attrs.evolve(b.outbox_message(), created_at=datetime(1990, 1, 1, tzinfo=UTC)
                            + timedelta(seconds=seconds))

    third, first, second = old(3), old(1), old(2)
    tied = sorted([old(4), old(4)], key=lambda m: m.id)
    for message in (third, first, *tied, second):
        await uow.outbox.add(message)
    with pytest.raises(Conflict):
        await uow.outbox.add(attrs.evolve(b.outbox_message(), id=first.id))

    assert (await uow.outbox.pending(5)) == [first, second, third, *tied]
    assert (await uow.outbox.pending(2)) == [first, second]
    assert (await uow.outbox.pending(1))[0].body == first.body

    await uow.outbox.mark_published([first.id, third.id, uid("msg")], at(60))
    assert (await uow.outbox.pending(3)) == [second, *tied]
    # Marking again, or an empty batch, changes nothing.
    await uow.outbox.mark_published([first.id], at(90))
    await uow.outbox.mark_published([], at(90))
    await uow.outbox.mark_published([second.id, tied[0].id, tied[1].id], at(61))
    assert [m.id for m in await uow.outbox.pending(100)
            if m.id in {first.id, second.id, third.id, *(t.id for t in tied)}] == []
    with pytest.raises(Invalid):
        await uow.outbox.pending(0)


async def test_an_outbox_message_is_committed_with_its_run_or_not_at_all(
        uow_factory: UnitOfWorkFactory, sql_engine: AsyncEngine | None) -> None:
    run = b.run(org_id=uid("org"))
    message = b.outbox_message(topic=f"runs.{run.org_id}")

    async def committed() -> tuple[bool, bool] | None:
        """What another connection sees while a unit is open (SQL stores only)."""
        if sql_engine is None:
            return None
        async with sql_engine.connect() as conn:
            runs = await conn.execute(sa.select(tables.runs.c.id)
                                      .where(tables.runs.c.id == run.id))
            outbox = await conn.execute(sa.select(tables.outbox.c.id)
                                        .where(tables.outbox.c.id == message.id))
            return runs.first() is not None, outbox.first() is not None

    async def pending_ids(uow: UnitOfWork) -> set[str]:
        return {m.id for m in await uow.outbox.pending(1000)}

    async with uow_factory() as uow:
        await uow.runs.add(run)
        await uow.outbox.add(message)
    async with uow_factory() as uow:
        assert message.id not in await pending_ids(uow)
        with pytest.raises(NotFound):
            await uow.runs.get(run.id)

    async with uow_factory() as uow:
        await uow.runs.add(run)
        await uow.outbox.add(message)
        assert message.id in await pending_ids(uow)
        assert await committed() in (None, (False, False))
        await uow.commit()
        assert await committed() in (None, (True, True))
    async with uow_factory() as uow:
        assert await uow.runs.get(run.id) == run
        assert message in await uow.outbox.pending(1000)
        await uow.outbox.mark_published([message.id], at(5))
        await uow.commit()
    async with uow_factory() as uow:
        assert message.id not in await pending_ids(uow)


# ---------------------------------------------------------------- template sharing


async def _personal_template(uow: UnitOfWork, owner_id: str | None = None,
                             name: str | None = None) -> Template:
    template, first = b.template(owner_id=owner_id or uid("usr"), name=name)
    await uow.templates.add(template, first)
    return template


async def test_template_grants_insert_replace_list_and_revoke(uow: UnitOfWork) -> None:
    template = await _personal_template(uow)
    alice = b.template_grant(template.id, granted=2)
    bob = b.template_grant(template.id, granted=1, rights=TemplateRight.VIEW)
    await uow.templates.grant(alice)
    await uow.templates.grant(bob)
    assert await uow.templates.grant_of(template.id, alice.user_id) == alice
    assert await uow.templates.grants(template.id) == [bob, alice]

    widened = attrs.evolve(bob, rights=ALL_TEMPLATE_RIGHTS, granted_at=at(3))
    await uow.templates.grant(widened)
    assert await uow.templates.grant_of(template.id, bob.user_id) == widened
    assert (await uow.templates.grant_of(template.id, bob.user_id)).rights & TemplateRight.DELETE
    assert await uow.templates.grants(template.id) == [alice, widened]

    await uow.templates.revoke(template.id, alice.user_id)
    assert await uow.templates.grants(template.id) == [widened]
    with pytest.raises(NotFound):
        await uow.templates.revoke(template.id, alice.user_id)
    with pytest.raises(NotFound):
        await uow.templates.grant_of(template.id, alice.user_id)
    with pytest.raises(NotFound):
        await uow.templates.grant(b.template_grant(uid("tpl")))
    assert await uow.templates.grants(uid("tpl")) == []


async def test_templates_shared_with_a_user_are_personal_ones_by_name(uow: UnitOfWork) -> None:
    me, someone = uid("usr"), uid("usr")
    mine = await _personal_template(uow, me, name="zulu")
    theirs = await _personal_template(uow, someone, name="alpha")
    unshared = await _personal_template(uow, someone, name="bravo")
    granted_too = await _personal_template(uow, someone, name="mike")
    org_template, first = b.template(org_id=uid("org"), owner_id=someone, name="charlie")
    await uow.templates.add(org_template, first)
    await uow.templates.grant(b.template_grant(theirs.id, me))
    await uow.templates.grant(b.template_grant(granted_too.id, me))
    await uow.templates.grant(b.template_grant(mine.id, me, rights=ALL_TEMPLATE_RIGHTS))
    await uow.templates.grant(b.template_grant(unshared.id, uid("usr")))

    assert await uow.templates.shared_with(me) == [theirs, granted_too, mine]
    assert await uow.templates.shared_with(someone) == [theirs, unshared, granted_too]
    await uow.templates.revoke(theirs.id, me)
    assert await uow.templates.shared_with(me) == [granted_too, mine]
    assert await uow.templates.shared_with(uid("usr")) == []


async def test_template_invitations_add_find_and_answer(uow: UnitOfWork) -> None:
    template = await _personal_template(uow)
    email = f"{uid('guest')}@Example.com"
    newer = b.template_invitation(template.id, email, created=2)
    other = await _personal_template(uow)
    older = b.template_invitation(other.id, email.upper(), created=1)
    await uow.templates.add_invitation(newer)
    await uow.templates.add_invitation(older)
    assert await uow.templates.invitation(newer.id) == newer
    assert await uow.templates.invitation_by_code_hash(older.code_hash) == older
    assert await uow.templates.invitations_for(email.swapcase()) == [older, newer]
    with pytest.raises(Conflict):
        await uow.templates.add_invitation(attrs.evolve(
            b.template_invitation(other.id), id=newer.id))
    with pytest.raises(NotFound):
        await uow.templates.add_invitation(b.template_invitation(uid("tpl")))
    with pytest.raises(NotFound):
        await uow.templates.invitation(uid("tinv"))
    with pytest.raises(NotFound):
        await uow.templates.invitation_by_code_hash(uid("sha256"))

    accepted = attrs.evolve(newer, status=TemplateInvitationStatus.ACCEPTED, answered_at=at(5))
    await uow.templates.update_invitation(accepted)
    assert await uow.templates.invitation(newer.id) == accepted
    assert await uow.templates.invitation_by_code_hash(newer.code_hash) == accepted
    assert await uow.templates.invitations_for(email) == [older]
    with pytest.raises(NotFound):
        await uow.templates.update_invitation(b.template_invitation(template.id))
    # An invitation never moves to another template.
    await uow.templates.update_invitation(attrs.evolve(accepted, template_id=other.id))
    assert (await uow.templates.invitation(newer.id)).template_id == template.id


async def test_one_pending_template_invitation_per_template_and_email_ignoring_case(
        uow: UnitOfWork) -> None:
    template, elsewhere = await _personal_template(uow), await _personal_template(uow)
    first = b.template_invitation(template.id)
    await uow.templates.add_invitation(first)
    with pytest.raises(Conflict):
        await uow.templates.add_invitation(
            b.template_invitation(template.id, first.email.swapcase(), created=1))
    await uow.templates.add_invitation(b.template_invitation(elsewhere.id, first.email))

    for n, status in enumerate((TemplateInvitationStatus.REJECTED,
                                TemplateInvitationStatus.CANCELLED)):
        [pending] = [i for i in await uow.templates.invitations_for(first.email)
                     if i.template_id == template.id]
        await uow.templates.update_invitation(
            attrs.evolve(pending, status=status, answered_at=at(2)))
        await uow.templates.add_invitation(
            b.template_invitation(template.id, first.email.upper(), created=3 + n))
    # Reopening an answered invitation would make a second pending one.
    with pytest.raises(Conflict):
        await uow.templates.update_invitation(first)


async def test_deleting_a_template_removes_its_grants_and_invitations(uow: UnitOfWork) -> None:
    owner, guest = uid("usr"), uid("usr")
    template, kept = await _personal_template(uow, owner), await _personal_template(uow, owner)
    grant, kept_grant = b.template_grant(template.id, guest), b.template_grant(kept.id, guest)
    await uow.templates.grant(grant)
    await uow.templates.grant(kept_grant)
    invitation = b.template_invitation(template.id)
    kept_invitation = b.template_invitation(kept.id, invitation.email)
    await uow.templates.add_invitation(invitation)
    await uow.templates.add_invitation(kept_invitation)

    await uow.templates.delete(template.id)
    assert await uow.templates.grants(template.id) == []
    with pytest.raises(NotFound):
        await uow.templates.grant_of(template.id, guest)
    with pytest.raises(NotFound):
        await uow.templates.invitation(invitation.id)
    with pytest.raises(NotFound):
        await uow.templates.invitation_by_code_hash(invitation.code_hash)
    assert await uow.templates.invitations_for(invitation.email) == [kept_invitation]
    assert await uow.templates.shared_with(guest) == [kept]
    assert await uow.templates.grants(kept.id) == [kept_grant]

    # A template made again with the same id starts with no grants or invitations.
    again, first = b.template(owner_id=owner)
    await uow.templates.add(attrs.evolve(again, id=template.id), attrs.evolve(
        first, template_id=template.id))
    assert await uow.templates.grants(template.id) == []


# ---------------------------------------------------------------- workers


async def test_workers_save_inserts_or_replaces(uow: UnitOfWork) -> None:
    org_id = uid("org")
    w2, w1 = b.worker(org_id, "w2"), b.worker(org_id, "w1")
    await uow.workers.save(w2)
    await uow.workers.save(w1)
    assert await uow.workers.get(w2.id) == w2
    seen = attrs.evolve(w2, last_seen_at=at(30), runs_in_progress=0, labels={})
    await uow.workers.save(seen)
    assert await uow.workers.get(w2.id) == seen
    assert await uow.workers.of_org(org_id) == [w1, seen]
    with pytest.raises(NotFound):
        await uow.workers.get(uid("wkr"))


async def test_workers_last_seen_is_the_latest_of_the_orgs_workers(uow: UnitOfWork) -> None:
    org_id, other_org = uid("org"), uid("org")
    assert await uow.workers.last_seen(org_id) is None
    for name, seen in [("w1", 10), ("w2", 30), ("w3", 20)]:
        await uow.workers.save(attrs.evolve(b.worker(org_id, name), last_seen_at=at(seen)))
    await uow.workers.save(attrs.evolve(b.worker(other_org, "w9"), last_seen_at=at(90)))
    latest = await uow.workers.last_seen(org_id)
    assert latest == at(30) and latest is not None and latest.tzinfo is not None


# ---------------------------------------------------------------- SQL only


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def sql_only(request: pytest.FixtureRequest) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(request.getfixturevalue(f"{request.param}_url"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_migrating_an_empty_sqlite_database_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    assert await current_revision(url) is None
    await migrate(url)
    head = await current_revision(url)
    assert head is not None
    schema = await _schema(url)
    await migrate(url)
    assert await current_revision(url) == head
    assert await _schema(url) == schema


async def _schema(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.text(
                "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"))
            return [(r[0], r[1]) for r in rows]
    finally:
        await engine.dispose()


async def test_the_migrations_create_the_schema_the_tables_describe(
        sql_only: AsyncEngine) -> None:
    def differences(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with sql_only.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_health_check_answers_for_a_working_store(sql_only: AsyncEngine) -> None:
    await SqlHealthCheck(sql_only).check()


async def test_an_unreachable_database_is_unavailable_naming_the_store() -> None:
    # Port 9 on loopback: nothing listens there, so the connection is refused at once.
    engine = create_engine("mysql+asyncmy://root@127.0.0.1:9/opsicle", connect_args={
        "connect_timeout": 2})
    try:
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1:9/opsicle"):
            await SqlHealthCheck(engine).check()
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1:9/opsicle"):
            async with SqlUnitOfWork(engine) as unit:
                await unit.users.get("x")
    finally:
        await engine.dispose()


async def test_count_by_status_counts_every_orgs_runs(uow: UnitOfWork) -> None:
    before = await uow.runs.count_by_status()
    runs = [b.run(org_id=uid("org"), created=1),
            b.run(org_id=uid("org"), created=2),
            b.run(org_id=uid("org"), created=3, status=RunStatus.SUCCEEDED),
            b.run(org_id=uid("org"), created=4, status=RunStatus.FAILED)]
    for run in runs:
        await uow.runs.add(run)
    after = await uow.runs.count_by_status()
    # Other tests share the database: compare with what was there before.
    moved = {s: after.get(s, 0) - before.get(s, 0) for s in RunStatus}
    assert moved == {s: {RunStatus.QUEUED: 2, RunStatus.SUCCEEDED: 1,
                         RunStatus.FAILED: 1}.get(s, 0) for s in RunStatus}
