"""The one authorisation path: resolve the org, require membership, then ask ``decide``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress

import attrs

from domain.audit import Outcome
from domain.errors import FieldError, Forbidden, Invalid, NotFound, Unauthenticated
from domain.orgs import Membership, Organisation
from domain.permissions import Action, Decision, Resource, Role, decide
from domain.ports import UnitOfWork
from domain.services.platform import Caller, Platform, record

ACTION_ALIASES: dict[str, Action] = {
    "create": Action.CREATE,
    "view": Action.VIEW,
    "read": Action.VIEW,
    "get": Action.VIEW,
    "list": Action.VIEW,
    "update": Action.UPDATE,
    "patch": Action.UPDATE,
    "put": Action.UPDATE,
    "edit": Action.UPDATE,
    "delete": Action.DELETE,
    "remove": Action.DELETE,
    "execute": Action.EXECUTE,
    "run": Action.EXECUTE,
    "manage": Action.MANAGE,
    "admin": Action.MANAGE,
}


@attrs.frozen
class Access:
    """What an authorised request resolved to: the org, the caller's membership in it, and
    the caller's roles there when they were read (None when membership was enough)."""

    org: Organisation
    member: Membership
    roles: tuple[Role, ...] | None = None


def action_named(name: str) -> Action:
    """An action by name or alias (view = read = get …); raises ``Invalid`` otherwise."""
    try:
        return ACTION_ALIASES[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted({a.name.lower() for a in Action if a.name}))
        raise Invalid(
            f"unknown action {name!r}", errors=(FieldError("action", f"expected one of: {known}"),)
        ) from None


def resource_named(name: str) -> Resource:
    """A resource by name (dashes or underscores); raises ``Invalid`` otherwise."""
    try:
        return Resource(name.strip().lower().replace("-", "_"))
    except ValueError:
        known = ", ".join(r.value for r in Resource)
        raise Invalid(
            f"unknown resource {name!r}",
            errors=(FieldError("resource", f"expected one of: {known}"),),
        ) from None


def action_label(action: Action) -> str:
    return action.name.lower() if action.name else str(action.value)


@attrs.frozen
class Pending:
    """A refusal still to be audited."""

    caller: Caller
    verb: str
    resource_type: str
    resource_id: str
    org_id: str | None
    reason: str


class Hidden(NotFound):
    """Not a member: answered exactly like an org that does not exist."""

    def __init__(self, message: str, pending: Pending) -> None:
        super().__init__(message, code="org_not_found")
        self.pending = pending


class Refused(Forbidden):
    """A member whose roles do not allow the action."""

    def __init__(self, message: str, pending: Pending) -> None:
        super().__init__(message, code="insufficient_permissions")
        self.pending = pending


@asynccontextmanager
async def unit_of_work(p: Platform) -> AsyncIterator[UnitOfWork]:
    """``p.uow()`` that audits a refusal raised inside it once it is closed: an embedded
    SQL store has one writer at a time, and the open unit may hold it."""
    try:
        async with p.uow() as uow:
            yield uow
    except (Hidden, Refused) as exc:
        e = exc.pending
        await record(
            p,
            e.caller,
            e.verb,
            e.resource_type,
            e.resource_id,
            org_id=e.org_id,
            outcome=Outcome.FAILURE,
            data={"reason": e.reason},
        )
        raise


def user_of(caller: Caller) -> str:
    if caller.user_id is None:
        raise Unauthenticated("log in first")
    return caller.user_id


async def account_id(uow: UnitOfWork, ref: str) -> str | None:
    """The user id ``ref`` names: ``ref`` itself unless it is an email, then the id of the
    account with that email, or None when there is none."""
    if "@" not in ref:
        return ref
    try:
        return (await uow.users.by_email(ref.strip())).id
    except NotFound:
        return None


async def emails_of(uow: UnitOfWork, user_ids: Iterable[str]) -> dict[str, str]:
    """The email of each of ``user_ids`` that is an account's id (others are left out)."""
    emails = {}
    for user_id in set(user_ids):
        with suppress(NotFound):
            emails[user_id] = (await uow.users.get(user_id)).email
    return emails


async def roles_of(uow: UnitOfWork, org_id: str, user_id: str) -> list[Role]:
    return await uow.roles.of_member(org_id, user_id)


async def authorize(
    p: Platform,
    uow: UnitOfWork,
    caller: Caller,
    org_ref: str,
    action: Action | None,
    resource: Resource | None,
    *,
    verb: str,
) -> Access:
    """Let the caller act on ``resource`` in the org, or raise.

    An org the caller does not belong to answers ``NotFound`` exactly like one that does not
    exist, so nobody learns which orgs exist. A member whose roles do not allow the action
    gets ``Forbidden`` with the policy's reason. With ``action`` None, membership is enough.
    Every refusal is audited with outcome failure when the unit of work is opened with
    ``unit_of_work`` (as every use case does).
    """
    user_id = user_of(caller)
    try:
        org, member = await uow.orgs.find_member(org_ref, user_id)
    except NotFound:
        raise Hidden(
            f"organisation {org_ref} not found",
            Pending(
                caller, verb, resource.value if resource else "org", org_ref, None, "not a member"
            ),
        ) from None
    access = Access(org, member)
    if action is not None and resource is not None:
        access = await permit(uow, caller, access, action, resource, verb=verb)
    return access


async def permit(
    uow: UnitOfWork,
    caller: Caller,
    access: Access,
    action: Action,
    resource: Resource,
    *,
    verb: str,
) -> Access:
    """``authorize``'s role check for a member whose ``access`` is resolved already; the
    returned access holds the roles (read in this unit of work, once)."""
    roles = access.roles
    if roles is None:
        roles = tuple(await roles_of(uow, access.org.id, access.member.user_id))
        access = attrs.evolve(access, roles=roles)
    decision = decide(roles, action, resource)
    if not decision:
        raise Refused(
            f"you may not {action_label(action)} {resource.value} in {access.org.code}: "
            f"{decision.reason}",
            Pending(caller, verb, resource.value, "", access.org.id, decision.reason),
        )
    return access


async def decision_for(
    uow: UnitOfWork, org_id: str, user_id: str, action: Action, resource: Resource
) -> Decision:
    return decide(await roles_of(uow, org_id, user_id), action, resource)
