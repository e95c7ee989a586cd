"""A state machine over members, roles, grants, assignments and revocations in two orgs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.errors import Conflict, Forbidden, NotFound, Unauthenticated
from domain.orgs import MemberType
from domain.permissions import ADMIN, ADMINISTRATOR_ROLE, WORKER_ROLE, Action, Grant, Resource
from domain.services import orgs, roles, tokens
from domain.services.authorization import authorize
from domain.services.platform import Caller, Platform
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user

T = TypeVar("T")
USERS = 4
ORGS = ("alpha", "beta")
ACTIONS = tuple(Action)
masks = st.integers(min_value=0, max_value=int(ADMIN)).map(Action)
actors = st.integers(0, USERS - 1)
MANAGE = ((Action.MANAGE, Resource.ORG_USER),)
grant_sets = st.dictionaries(
    st.sampled_from(tuple(Resource)), st.builds(Grant, allow=masks, deny=masks), max_size=3
)


@dataclass
class Model:
    members: dict[str, set[int]]
    roles: dict[str, dict[str, dict[Resource, Grant]]]
    held: set[tuple[str, int, str]]


class Permissions(RuleBasedStateMachine):
    """The model: who is in which org, what each role grants, who holds which role.

    Invariant: the one policy path (``authorize``) and ``can`` answer exactly what the model
    says for every user, org, action and resource; a non-member gets NotFound; nobody ever
    sees another org's roles or tokens; a revoked token never authenticates.
    """

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.p: Platform
        self.p, self.mailer = memory_platform()
        self.users: list[Caller] = [self.run(make_user(self.p)) for _ in range(USERS)]
        self.codes: dict[str, str] = {}
        self.members: dict[str, set[int]] = {}
        self.roles: dict[str, dict[str, dict[Resource, Grant]]] = {}
        self.names: dict[str, dict[str, str]] = {}
        self.held: set[tuple[str, int, str]] = set()
        self.tokens: dict[str, dict[str, str | None]] = {}  # org -> token id -> secret
        for founder, org in enumerate(ORGS):
            code = f"{org}-{self.users[0].user_id}".lower()[:32]
            self.run(orgs.create_org(self.p, self.users[founder], f"Org {org} here", code))
            self.codes[org] = code
            self.members[org] = {founder}
            self.roles[org], self.names[org] = {}, {}
            for role in self.run(roles.list_roles(self.p, self.users[founder], code)):
                self.roles[org][role.id] = dict(role.grants)
                self.names[org][role.id] = role.name
                if role.name == ADMINISTRATOR_ROLE:
                    self.held.add((org, founder, role.id))
            self.tokens[org] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.loop.close()

    def admin(self, org: str) -> Caller:
        return self.users[ORGS.index(org)]

    def founder(self, org: str, user: int) -> bool:
        return user == ORGS.index(org)

    def act(
        self,
        org: str,
        actor: int,
        needs: tuple[tuple[Action, Resource], ...],
        coro: Coroutine[Any, Any, T],
        after: Model | None = None,
    ) -> T | None:
        """Run ``actor``'s request; when the model refuses it, expect the service to as well:
        NotFound for a non-member, Forbidden for a member whose roles do not allow it, and
        Conflict for a change after which (``after``) no member could manage the org."""
        if actor not in self.members[org]:
            with pytest.raises(NotFound):
                self.run(coro)
            return None
        if not all(self.expected(org, actor, a, r) for a, r in needs):
            with pytest.raises(Forbidden):
                self.run(coro)
            return None
        if after is not None and not any(
            self.expected(org, u, *MANAGE[0], model=after) for u in after.members[org]
        ):
            with pytest.raises(Conflict, match="could manage"):
                self.run(coro)
            return None
        return self.run(coro)

    def changed(
        self,
        members: dict[str, set[int]] | None = None,
        roles: dict[str, dict[str, dict[Resource, Grant]]] | None = None,
        held: set[tuple[str, int, str]] | None = None,
    ) -> Model:
        """The model as it would be after a change."""
        return Model(
            self.members if members is None else members,
            self.roles if roles is None else roles,
            self.held if held is None else held,
        )

    # ------------------------------------------------------------ rules

    @rule(org=st.sampled_from(ORGS), actor=actors, user=st.integers(0, USERS - 1))
    def join(self, org: str, actor: int, user: int) -> None:
        if user in self.members[org]:
            return
        caller = self.users[user]
        sent = self.act(
            org,
            actor,
            ((Action.CREATE, Resource.ORG_USER),),
            orgs.invite(self.p, self.users[actor], self.codes[org], caller.email),
        )
        if sent is None:
            return
        code = next(
            line.split(": ")[1]
            for line in self.mailer.to(caller.email)[-1].text.splitlines()
            if line.startswith("Your join code: ")
        )
        self.run(orgs.accept_invitation(self.p, caller, code, sent.id))
        self.members[org].add(user)

    @rule(org=st.sampled_from(ORGS), actor=actors, user=st.integers(0, USERS - 1))
    def remove(self, org: str, actor: int, user: int) -> None:
        if user not in self.members[org] or self.founder(org, user):
            return
        gone = self.act(
            org,
            actor,
            ((Action.DELETE, Resource.ORG_USER),),
            orgs.remove_member(self.p, self.users[actor], self.codes[org], self.users[user].email),
            self.changed(
                members={**self.members, org: self.members[org] - {user}},
                held={h for h in self.held if h[:2] != (org, user)},
            ),
        )
        if gone is not None:
            self.members[org].discard(user)
            self.held = {h for h in self.held if h[:2] != (org, user)}

    @rule(org=st.sampled_from(ORGS), actor=actors, grants=grant_sets, n=st.integers(0, 10**6))
    def create_role(self, org: str, actor: int, grants: dict[Resource, Grant], n: int) -> None:
        if f"r{n}" in self.names[org].values():
            return
        role = self.act(
            org,
            actor,
            MANAGE,
            roles.create_role(self.p, self.users[actor], self.codes[org], f"r{n}", grants),
        )
        if role is not None:
            self.roles[org][role.id] = {r: g for r, g in grants.items() if g.allow or g.deny}
            self.names[org][role.id] = role.name

    @precondition(lambda self: bool(self._custom_roles()))
    @rule(data=st.data(), actor=actors, grants=grant_sets)
    def change_grants(self, data: st.DataObject, actor: int, grants: dict[Resource, Grant]) -> None:
        org, role_id = data.draw(st.sampled_from(self._custom_roles()))
        kept = {r: g for r, g in grants.items() if g.allow or g.deny}
        changed = self.act(
            org,
            actor,
            MANAGE,
            roles.set_permissions(self.p, self.users[actor], self.codes[org], role_id, grants),
            self.changed(roles={**self.roles, org: {**self.roles[org], role_id: kept}}),
        )
        if changed is not None:
            self.roles[org][role_id] = kept

    @precondition(lambda self: bool(self._custom_roles()))
    @rule(data=st.data(), actor=actors)
    def delete_role(self, data: st.DataObject, actor: int) -> None:
        org, role_id = data.draw(st.sampled_from(self._custom_roles()))
        left = {r: g for r, g in self.roles[org].items() if r != role_id}
        deleted = self.act(
            org,
            actor,
            MANAGE,
            roles.delete_role(self.p, self.users[actor], self.codes[org], role_id),
            self.changed(
                roles={**self.roles, org: left}, held={h for h in self.held if h[2] != role_id}
            ),
        )
        if deleted is not None:
            del self.roles[org][role_id], self.names[org][role_id]
            self.held = {h for h in self.held if h[2] != role_id}

    @rule(data=st.data(), org=st.sampled_from(ORGS), actor=actors)
    def assign(self, data: st.DataObject, org: str, actor: int) -> None:
        user = data.draw(st.sampled_from(sorted(self.members[org])))
        role_id = data.draw(st.sampled_from(sorted(self.roles[org])))
        done = self.act(
            org,
            actor,
            MANAGE,
            roles.assign_role(
                self.p, self.users[actor], self.codes[org], role_id, user=self.users[user].user_id
            ),
            self.changed(held=self.held | {(org, user, role_id)}),
        )
        if done is not None:
            self.held.add((org, user, role_id))

    @rule(data=st.data(), org=st.sampled_from(ORGS), actor=actors)
    def unassign(self, data: st.DataObject, org: str, actor: int) -> None:
        user = data.draw(st.sampled_from(sorted(self.members[org])))
        role_id = data.draw(st.sampled_from(sorted(self.roles[org])))
        attempt = roles.unassign_role(
            self.p, self.users[actor], self.codes[org], role_id, user=self.users[user].email
        )
        keeps = self.founder(org, user) and self.names[org][role_id] == ADMINISTRATOR_ROLE
        if (
            keeps
            and actor in self.members[org]
            and all(self.expected(org, actor, a, r) for a, r in MANAGE)
        ):
            with pytest.raises(Conflict):
                self.run(attempt)
            return
        after = self.changed(held=self.held - {(org, user, role_id)})
        if self.act(org, actor, MANAGE, attempt, after) is not None:
            self.held.discard((org, user, role_id))

    @rule(org=st.sampled_from(ORGS), actor=actors, n=st.integers(0, 10**6))
    def create_token(self, org: str, actor: int, n: int) -> None:
        name = f"t{n}-{len(self.tokens[org])}"
        issued = self.act(
            org,
            actor,
            ((Action.CREATE, Resource.ORG_CONFIG), *MANAGE),
            tokens.create_token(self.p, self.users[actor], self.codes[org], name, [WORKER_ROLE]),
        )
        if issued is not None:
            self.tokens[org][issued.view.token.id] = issued.secret

    @precondition(lambda self: any(any(v for v in t.values()) for t in self.tokens.values()))
    @rule(data=st.data(), actor=actors)
    def revoke_token(self, data: st.DataObject, actor: int) -> None:
        org, token_id = data.draw(
            st.sampled_from(
                sorted((o, t) for o, ts in self.tokens.items() for t, s in ts.items() if s)
            )
        )
        secret = self.tokens[org][token_id]
        revoked = self.act(
            org,
            actor,
            ((Action.DELETE, Resource.ORG_CONFIG),),
            tokens.revoke_token(self.p, self.users[actor], self.codes[org], token_id),
        )
        if revoked is None:
            self.run(tokens.authenticate_token(self.p, token_id, secret or ""))
            return
        self.tokens[org][token_id] = None
        with pytest.raises(Unauthenticated):
            self.run(tokens.authenticate_token(self.p, token_id, secret or ""))

    def _custom_roles(self) -> list[tuple[str, str]]:
        return sorted(
            (org, role_id)
            for org, names in self.names.items()
            for role_id, name in names.items()
            if name not in (ADMINISTRATOR_ROLE, WORKER_ROLE)
        )

    # ------------------------------------------------------------ the model's answer

    def expected(
        self, org: str, user: int, action: Action, resource: Resource, model: Model | None = None
    ) -> bool:
        model = model or self.changed()
        grants = [
            model.roles[org][r].get(resource, Grant())
            for (o, u, r) in model.held
            if (o, u) == (org, user)
        ]
        if any(action & g.deny for g in grants):
            return False
        return any(action & g.allow for g in grants)

    @invariant()
    def nobody_does_what_their_roles_do_not_allow(self) -> None:
        self.run(self._check_policy())

    async def _check_policy(self) -> None:
        for user, caller in enumerate(self.users):
            for org in ORGS:
                member = user in self.members[org]
                async with self.p.uow() as uow:
                    for resource in Resource:
                        for action in ACTIONS:
                            try:
                                await authorize(
                                    self.p,
                                    uow,
                                    caller,
                                    self.codes[org],
                                    action,
                                    resource,
                                    verb="check",
                                )
                                outcome: str = "allowed"
                            except Forbidden:
                                outcome = "forbidden"
                            except NotFound:
                                outcome = "hidden"
                            if not member:
                                want = "hidden"
                            elif self.expected(org, user, action, resource):
                                want = "allowed"
                            else:
                                want = "forbidden"
                            assert outcome == want, (user, org, action, resource)
                if member:
                    answer = await roles.can(
                        self.p, caller, self.codes[org], Action.DELETE, Resource.ORG
                    )
                    assert answer.decision.allowed == self.expected(
                        org, user, Action.DELETE, Resource.ORG
                    )

    @invariant()
    def nobody_sees_another_orgs_roles_or_tokens(self) -> None:
        self.run(self._check_isolation())

    async def _check_isolation(self) -> None:
        for org in ORGS:
            code, other = self.codes[org], ORGS[1 - ORGS.index(org)]
            people = [
                u
                for u in self.members[org]
                if self.expected(org, u, Action.VIEW, Resource.ORG_USER)
            ]
            if people:
                viewer = self.users[people[0]]
                listed_roles = {r.id for r in await roles.list_roles(self.p, viewer, code)}
                assert listed_roles == set(self.roles[org])
                for role_id in self.roles[other]:
                    with pytest.raises(NotFound):
                        await roles.get_role(self.p, viewer, code, role_id)
                listed = await orgs.list_members(self.p, viewer, code)
                assert {m.membership.user_id for m in listed} == {
                    self.users[u].user_id for u in self.members[org]
                }
            keepers = [
                u
                for u in self.members[org]
                if self.expected(org, u, Action.VIEW, Resource.ORG_CONFIG)
            ]
            if keepers:
                keeper = self.users[keepers[0]]
                found = await tokens.list_tokens(self.p, keeper, code)
                assert {t.token.id: t.token.active for t in found} == {
                    t: s is not None for t, s in self.tokens[org].items()
                }
                for token_id in self.tokens[other]:
                    with pytest.raises(NotFound):
                        await tokens.get_token(self.p, keeper, code, token_id)
            for user in self.members[org]:
                joined = await orgs.get_org(self.p, self.users[user], code)
                assert joined.membership.type is (
                    MemberType.ADMIN if self.founder(org, user) else MemberType.MEMBER
                )


Permissions.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPermissions = Permissions.TestCase
