"""Relay claims in a dict, for tests and in-memory platforms."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.approvals import ChatClaim
from domain.ports import RelayClaims


class InMemoryRelayClaims:
    def __init__(self) -> None:
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


def in_memory_relay_claims() -> RelayClaims:
    return InMemoryRelayClaims()
