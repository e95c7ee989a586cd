"""Relay claims in a dict, for tests and in-memory platforms."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.approvals import ApprovalStatus, ChatClaim
from domain.errors import NotFound
from domain.ports import RelayClaims, UnitOfWorkFactory


class InMemoryRelayClaims:
    """Claims beside the platform store ``uow`` opens, whose approvals ``purge`` reads."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow
        self._claims: dict[tuple[str, str], ChatClaim] = {}

    async def claim(
        self, approval_id: str, channel: str, owner: str, *, now: datetime, until: datetime
    ) -> ChatClaim | None:
        held = self._claims.get((approval_id, channel))
        if held is None:
            claim = ChatClaim(approval_id, channel, owner, until)
        elif held.owner == owner:
            claim = attrs.evolve(held, until=until)
        elif held.until <= now:
            claim = attrs.evolve(held, owner=owner, until=until, fence=held.fence + 1)
        else:
            return None
        self._claims[(approval_id, channel)] = claim
        return claim

    async def release(self, approval_id: str, channel: str, owner: str) -> None:
        held = self._claims.get((approval_id, channel))
        if held is not None and held.owner == owner:
            del self._claims[(approval_id, channel)]

    async def purge(self, ended_before: datetime, limit: int = 500) -> int:
        stale: list[tuple[str, str]] = []
        async with self._uow() as uow:
            for key, held in list(self._claims.items()):
                if len(stale) == limit:
                    break
                if held.until >= ended_before:
                    continue
                try:
                    status = (await uow.approvals.get(held.approval_id)).status
                except NotFound:
                    status = None
                if status is not ApprovalStatus.PENDING:
                    stale.append(key)
        for key in stale:
            del self._claims[key]
        return len(stale)


def in_memory_relay_claims(uow: UnitOfWorkFactory) -> RelayClaims:
    return InMemoryRelayClaims(uow)
