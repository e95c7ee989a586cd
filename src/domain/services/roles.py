"""Role use cases: list, create, edit and delete roles; assign them; ask what is allowed."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from domain.errors import Conflict, FieldError, Invalid, NotFound
from domain.orgs import MemberType, Organisation
from domain.permissions import ADMINISTRATOR_ROLE, Action, Decision, Grant, Resource, Role
from domain.ports import UnitOfWork
from domain.services.authorization import authorize, decision_for, unit_of_work, user_of
from domain.services.orgs import find_member, keep_a_manager
from domain.services.platform import Caller, Platform, record
from domain.services.tokens import find_token

MAX_ROLE_NAME = 64


@attrs.frozen
class Answer:
    """The answer to 'may this user do that here', with the policy's reason."""

    org: Organisation
    user_id: str
    action: Action
    resource: Resource
    decision: Decision


def check_role_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_ROLE_NAME or not name.isprintable():
        raise Invalid(
            "the role name is not valid",
            errors=(FieldError("name", f"expected 1 to {MAX_ROLE_NAME} printable characters"),),
        )
    return name


def describe_grants(grants: Mapping[Resource, Grant]) -> str:
    return "; ".join(
        f"{r.value}: +{int(g.allow)} -{int(g.deny)}" for r, g in sorted(grants.items())
    )


async def list_roles(p: Platform, caller: Caller, ref: str) -> list[Role]:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_USER, verb="role.list"
        )
        return await uow.roles.of_org(access.org.id)


async def get_role(p: Platform, caller: Caller, ref: str, role_ref: str) -> Role:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_USER, verb="role.get"
        )
        return await find_role(uow, access.org, role_ref)


async def create_role(
    p: Platform, caller: Caller, ref: str, name: str, grants: Mapping[Resource, Grant]
) -> Role:
    name = check_role_name(name)
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.MANAGE, Resource.ORG_USER, verb="role.create"
        )
        if await _named(uow, access.org.id, name) is not None:
            raise Conflict(
                f"{access.org.code} already has a role named {name!r}", code="role_exists"
            )
        role = Role(p.ids.new_id(), access.org.id, name, dict(grants))
        await uow.roles.add(role)
        await record(
            p,
            caller,
            "role.create",
            "role",
            role.id,
            org_id=role.org_id,
            data={"name": name, "grants": describe_grants(role.grants)},
            uow=uow,
        )
        await uow.commit()
    return role


async def update_role(
    p: Platform,
    caller: Caller,
    ref: str,
    role_ref: str,
    *,
    name: str | None = None,
    grants: Mapping[Resource, Grant] | None = None,
    replace: bool = False,
) -> Role:
    """Rename a role and/or change its grants: the resources given replace theirs (all of
    them with ``replace``). The built-in Administrator role cannot change, so an org always
    has a role that can manage it."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.MANAGE, Resource.ORG_USER, verb="role.update"
        )
        await uow.orgs.lock(access.org.id)  # see keep_a_manager
        role = await find_role(uow, access.org, role_ref)
        if _is_administrator(role):
            raise Conflict("the built-in Administrator role cannot be changed", code="builtin_role")
        if name is not None:
            name = check_role_name(name)
            other = await _named(uow, access.org.id, name)
            if other is not None and other.id != role.id:
                raise Conflict(
                    f"{access.org.code} already has a role named {name!r}", code="role_exists"
                )
            role = attrs.evolve(role, name=name)
        if grants is not None:
            merged = {} if replace else dict(role.grants)
            merged.update(grants)
            role = attrs.evolve(role, grants={r: g for r, g in merged.items() if g.allow or g.deny})
        await uow.roles.update(role)
        await keep_a_manager(uow, access.org)
        await record(
            p,
            caller,
            "role.update",
            "role",
            role.id,
            org_id=role.org_id,
            data={"name": role.name, "grants": describe_grants(role.grants)},
            uow=uow,
        )
        await uow.commit()
    return role


async def set_permissions(
    p: Platform, caller: Caller, ref: str, role_ref: str, grants: Mapping[Resource, Grant]
) -> Role:
    """Replace every grant of a role."""
    return await update_role(p, caller, ref, role_ref, grants=grants, replace=True)


async def delete_role(p: Platform, caller: Caller, ref: str, role_ref: str) -> Role:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.MANAGE, Resource.ORG_USER, verb="role.delete"
        )
        await uow.orgs.lock(access.org.id)  # see keep_a_manager
        role = await find_role(uow, access.org, role_ref)
        if role.builtin:
            raise Conflict(
                f"the built-in role {role.name!r} cannot be deleted", code="builtin_role"
            )
        await uow.roles.delete(role.id)
        await keep_a_manager(uow, access.org)
        await record(
            p, caller, "role.delete", "role", role.id, org_id=role.org_id, data={"name": role.name},
            uow=uow,
        )
        await uow.commit()
    return role


async def assign_role(
    p: Platform,
    caller: Caller,
    ref: str,
    role_ref: str,
    *,
    user: str | None = None,
    token: str | None = None,
) -> Role:
    """Give the role to the NAMED member or worker token."""
    return await _assignment(p, caller, ref, role_ref, user, token, assign=True)


async def unassign_role(
    p: Platform,
    caller: Caller,
    ref: str,
    role_ref: str,
    *,
    user: str | None = None,
    token: str | None = None,
) -> Role:
    """Take the role from the NAMED member or worker token; an admin keeps Administrator."""
    return await _assignment(p, caller, ref, role_ref, user, token, assign=False)


async def _assignment(
    p: Platform,
    caller: Caller,
    ref: str,
    role_ref: str,
    user: str | None,
    token: str | None,
    *,
    assign: bool,
) -> Role:
    if (user is None) == (token is None):
        raise Invalid(
            "name either a member or a token",
            errors=(FieldError("user", "give exactly one of user and token"),),
        )
    verb = "role.assign" if assign else "role.unassign"
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, Action.MANAGE, Resource.ORG_USER, verb=verb)
        role = await find_role(uow, access.org, role_ref)
        if user is not None:
            await uow.orgs.lock(access.org.id)  # see keep_a_manager
            member = await find_member(uow, access.org, user)
            target, kind = member.user_id, "org_user"
            if assign:
                await uow.roles.assign(access.org.id, member.user_id, role.id)
            else:
                if _is_administrator(role) and member.type is MemberType.ADMIN:
                    raise Conflict(
                        "an admin keeps the Administrator role: change their member type first",
                        code="admin_keeps_role",
                    )
                await uow.roles.unassign(access.org.id, member.user_id, role.id)
            await keep_a_manager(uow, access.org)
        else:
            worker = await find_token(uow, access.org, str(token))
            target, kind = worker.id, "token"
            if assign:
                await uow.roles.assign_token(worker.id, role.id)
            else:
                await uow.roles.unassign_token(worker.id, role.id)
        await record(
            p,
            caller,
            verb,
            kind,
            target,
            org_id=access.org.id,
            data={"role": role.id, "roleName": role.name},
            uow=uow,
        )
        await uow.commit()
    return role


async def can(
    p: Platform,
    caller: Caller,
    ref: str,
    action: Action,
    resource: Resource,
    user: str | None = None,
) -> Answer:
    """Whether a member (the caller unless named) may do ``action`` on ``resource``.

    Asking about yourself needs membership; asking about others needs ``org_user:view``.
    """
    me = user_of(caller)
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, ref, None, None, verb="org.can")
        target = access.member.user_id
        if user is not None:
            named = await find_member(uow, access.org, user)
            if named.user_id != me:
                await authorize(
                    p, uow, caller, access.org.id, Action.VIEW, Resource.ORG_USER, verb="org.can"
                )
            target = named.user_id
        decision = await decision_for(uow, access.org.id, target, action, resource)
    return Answer(access.org, target, action, resource, decision)


async def find_role(uow: UnitOfWork, org: Organisation, role_ref: str) -> Role:
    """A role of ``org`` by id or by name (case-insensitive)."""
    try:
        role = await uow.roles.get(role_ref)
        if role.org_id == org.id:
            return role
    except NotFound:
        pass
    named = await _named(uow, org.id, role_ref)
    if named is None:
        raise NotFound(f"{org.code} has no role {role_ref}", code="role_not_found")
    return named


async def _named(uow: UnitOfWork, org_id: str, name: str) -> Role | None:
    key = name.strip().lower()
    for role in await uow.roles.of_org(org_id):
        if role.name.lower() == key:
            return role
    return None


def _is_administrator(role: Role) -> bool:
    return role.builtin and role.name == ADMINISTRATOR_ROLE
