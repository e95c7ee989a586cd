"""The org guards on every platform store: two changes at once cannot both take what the
other one counted on (the last admin, the last member who can manage the org)."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest

from adapters.memory.clock import FakeClock
from domain.errors import Conflict
from domain.orgs import Membership, MemberType
from domain.permissions import ADMINISTRATOR_ROLE
from domain.ports import OrgRepository, UnitOfWork, UnitOfWorkFactory
from domain.services import orgs
from domain.services.platform import Platform
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user, unique_code


class SlowMembers:
    """The org repository of a unit of work, whose ``members`` answers late: two guards
    reading at once both read before either changes anything, unless the org is locked."""

    def __init__(self, orgs: OrgRepository) -> None:
        self._orgs = orgs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._orgs, name)

    async def members(self, org_id: str) -> list[Membership]:
        found = await self._orgs.members(org_id)
        await asyncio.sleep(0.2)
        return found


class SlowUnitOfWork:
    def __init__(self, inner: UnitOfWork) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> Any:
        await self._inner.__aenter__()
        self.orgs = SlowMembers(self._inner.orgs)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._inner.__aexit__(*exc)


@pytest.fixture
def p(uow_factory: UnitOfWorkFactory) -> Platform:
    base, _ = memory_platform(FakeClock())
    return attrs.evolve(base, uow=lambda: SlowUnitOfWork(uow_factory()))


async def test_two_admins_leaving_at_once_leave_one_admin(p: Platform) -> None:
    first, second = await make_user(p), await make_user(p)
    org = await orgs.create_org(p, first, "Guarded Operations", unique_code())
    async with p.uow() as uow:  # the second admin, as an accepted invitation leaves them
        assert second.user_id is not None
        await uow.orgs.add_member(
            Membership(org.id, second.user_id, MemberType.ADMIN, p.clock.now()))
        [admin] = [r for r in await uow.roles.of_org(org.id) if r.name == ADMINISTRATOR_ROLE]
        await uow.roles.assign(org.id, second.user_id, admin.id)
        await uow.commit()

    results = await asyncio.gather(
        orgs.leave_org(p, first, org.code), orgs.leave_org(p, second, org.code),
        return_exceptions=True)

    refused = [r for r in results if isinstance(r, Conflict)]
    assert [r.code for r in refused] == ["last_org_admin"], results
    async with p.uow() as uow:
        admins = [m for m in await uow.orgs.members(org.id) if m.type is MemberType.ADMIN]
    assert len(admins) == 1
