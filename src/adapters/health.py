"""Health checks for ports that have no check of their own."""

from __future__ import annotations

import attrs

from domain.errors import Unavailable
from domain.ports import Cache


@attrs.frozen
class CacheHealthCheck:
    """Writes and reads back a short-lived key: the cache answers and keeps what it is given."""

    cache: Cache
    name: str = "cache"

    async def check(self) -> None:
        await self.cache.set("opsicle:health", b"ok", ttl_seconds=10)
        if await self.cache.get("opsicle:health") != b"ok":
            raise Unavailable(f"{self.name} did not return what was written")
