"""The approver's grant key ring in a list, for tests and in-memory platforms."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from domain.grants import StoredGrantKey
from domain.ports import GrantKeyRepository


class InMemoryGrantKeyRepository:
    def __init__(self) -> None:
        self._keys: list[StoredGrantKey] = []

    async def keys(self) -> list[StoredGrantKey]:
        return list(self._keys)

    async def add_first(self, keys: Sequence[StoredGrantKey]) -> list[StoredGrantKey]:
        if not self._keys:
            self._keys = sorted(keys, key=lambda k: k.created_at)
        return list(self._keys)

    async def rotate(
        self, current_key_id: str, new: StoredGrantKey, *, at: datetime, expires_at: datetime
    ) -> list[StoredGrantKey] | None:
        if not any(k.key_id == current_key_id and k.retired_at is None for k in self._keys):
            return None
        kept = [
            attrs.evolve(k, retired_at=at, expires_at=expires_at)
            if k.key_id == current_key_id
            else k
            for k in self._keys
            if k.expires_at is None or k.expires_at > at
        ]
        self._keys = [*kept, new]
        return list(self._keys)


def in_memory_grant_keys() -> GrantKeyRepository:
    return InMemoryGrantKeyRepository()
