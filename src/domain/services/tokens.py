"""Worker token use cases: create and rotate (the secret is shown once), list, revoke."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from domain.errors import Conflict, FieldError, Invalid, NotFound, Unauthenticated
from domain.orgs import Organisation
from domain.permissions import WORKER_ROLE, Action, Resource, Role
from domain.ports import UnitOfWork
from domain.services.authorization import authorize, unit_of_work
from domain.services.platform import Caller, Platform, record
from domain.tokens import TOKEN_PREFIX, WorkerToken

MAX_TOKEN_NAME = 64


@attrs.frozen
class TokenView:
    token: WorkerToken
    roles: tuple[Role, ...]


@attrs.frozen
class IssuedToken:
    """A token with its secret: the only time the secret is ever shown."""

    view: TokenView
    secret: str


async def create_token(
    p: Platform, caller: Caller, ref: str, name: str, roles: Sequence[str] = ()
) -> IssuedToken:
    """A new token holding ``roles`` (by id or name; the Worker role when none are named).

    Choosing roles hands out their permissions, so that needs ``org_user:manage`` too.
    """
    from domain.services.roles import find_role

    name = name.strip()
    if not 1 <= len(name) <= MAX_TOKEN_NAME or not name.isprintable():
        raise Invalid(
            "the token name is not valid",
            errors=(FieldError("name", f"expected 1 to {MAX_TOKEN_NAME} printable characters"),),
        )
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.CREATE, Resource.ORG_CONFIG, verb="token.create"
        )
        org = access.org
        if roles:
            await authorize(
                p, uow, caller, org.id, Action.MANAGE, Resource.ORG_USER, verb="token.create"
            )
            chosen = [await find_role(uow, org, r) for r in roles]
        else:
            chosen = [await find_role(uow, org, WORKER_ROLE)]
        if any(t.name == name and t.active for t in await uow.tokens.of_org(org.id)):
            raise Conflict(
                f"{org.code} already has an active token named {name!r}", code="token_exists"
            )
        secret = p.secrets.new_token(TOKEN_PREFIX)
        token = WorkerToken(
            p.ids.new_id(),
            org.id,
            name,
            p.secrets.hash(secret),
            p.clock.now(),
            created_by=access.member.user_id,
        )
        await uow.tokens.add(token)
        for role in chosen:
            await uow.roles.assign_token(token.id, role.id)
        view = TokenView(token, tuple(await uow.roles.of_token(token.id)))
        await record(
            p,
            caller,
            "token.create",
            "token",
            token.id,
            org_id=org.id,
            data={"name": name, "roles": ",".join(r.name for r in view.roles)},
            uow=uow,
        )
        await uow.commit()
    return IssuedToken(view, secret)


async def list_tokens(p: Platform, caller: Caller, ref: str) -> list[TokenView]:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_CONFIG, verb="token.list"
        )
        return [
            TokenView(t, tuple(await uow.roles.of_token(t.id)))
            for t in await uow.tokens.of_org(access.org.id)
        ]


async def get_token(p: Platform, caller: Caller, ref: str, token_ref: str) -> TokenView:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.VIEW, Resource.ORG_CONFIG, verb="token.get"
        )
        token = await find_token(uow, access.org, token_ref)
        return TokenView(token, tuple(await uow.roles.of_token(token.id)))


async def revoke_token(p: Platform, caller: Caller, ref: str, token_ref: str) -> TokenView:
    """Revoke at once: the next authentication with it fails."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.DELETE, Resource.ORG_CONFIG, verb="token.revoke"
        )
        token = _active(await find_token(uow, access.org, token_ref))
        token = attrs.evolve(token, revoked_at=p.clock.now())
        await uow.tokens.update(token)
        view = TokenView(token, tuple(await uow.roles.of_token(token.id)))
        await record(
            p, caller, "token.revoke", "token", token.id, org_id=token.org_id,
            data={"name": token.name}, uow=uow,
        )
        await uow.commit()
    return view


async def rotate_token(p: Platform, caller: Caller, ref: str, token_ref: str) -> IssuedToken:
    """A new secret for the same token id; the old secret stops working at once."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, ref, Action.UPDATE, Resource.ORG_CONFIG, verb="token.rotate"
        )
        token = _active(await find_token(uow, access.org, token_ref))
        secret = p.secrets.new_token(TOKEN_PREFIX)
        token = attrs.evolve(token, secret_hash=p.secrets.hash(secret), rotated_at=p.clock.now())
        await uow.tokens.update(token)
        view = TokenView(token, tuple(await uow.roles.of_token(token.id)))
        await record(
            p, caller, "token.rotate", "token", token.id, org_id=token.org_id,
            data={"name": token.name}, uow=uow,
        )
        await uow.commit()
    return IssuedToken(view, secret)


async def authenticate_token(p: Platform, token_id: str, secret: str) -> TokenView:
    """The active token that ``secret`` belongs to; ``Unauthenticated`` otherwise."""
    refused = Unauthenticated("the worker token is not valid", code="token_invalid")
    async with unit_of_work(p) as uow:
        try:
            token = await uow.tokens.get(token_id)
        except NotFound:
            raise refused from None
        # Hashes of 224-bit secrets: comparing them leaks nothing useful through timing.
        if not token.active or p.secrets.hash(secret) != token.secret_hash:
            raise refused
        return TokenView(token, tuple(await uow.roles.of_token(token.id)))


async def find_token(uow: UnitOfWork, org: Organisation, token_ref: str) -> WorkerToken:
    """A token of ``org`` by id, or by name (the active one of that name first)."""
    try:
        token = await uow.tokens.get(token_ref)
        if token.org_id == org.id:
            return token
    except NotFound:
        pass
    named = [t for t in await uow.tokens.of_org(org.id) if t.name == token_ref]
    if not named:
        raise NotFound(f"{org.code} has no token {token_ref}", code="token_not_found")
    return max(named, key=lambda t: (t.active, t.created_at, t.id))


def _active(token: WorkerToken) -> WorkerToken:
    if not token.active:
        raise Conflict(f"token {token.id} is revoked", code="token_revoked")
    return token
