"""The Cache port on Redis: namespaced keys, SET PX/NX, and an atomic fixed-window INCR."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from domain.errors import Invalid, Unavailable
from domain.ports import Cache, HealthCheck

DEFAULT_PREFIX = "opsicle:"
DEFAULT_TIMEOUT = 5.0

# INCR and the first expiry in one step: a process dying between the two would otherwise leave
# a counter that never expires (and a rate limit that never resets). PTTL -1 means "no expiry",
# so later increments keep the window that the first one opened; this also works on Redis
# before 7.0, which has no PEXPIRE NX.
_INCR_WITH_WINDOW = """
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


class RedisCache:
    """Owns one client (and its connection pool) on ``url``; close it with ``aclose``.

    Every key is stored as ``prefix + key`` so several deployments, or test runs, can share
    one server without seeing each other's keys.
    """

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.client: aioredis.Redis = aioredis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self.prefix = prefix
        self.address = _address(self.client)
        self._incr = self.client.register_script(_INCR_WITH_WINDOW)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> RedisCache:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def get(self, key: str) -> bytes | None:
        with translate_errors(self.address):
            value = await self.client.get(self.prefix + key)
        # The client is made without decode_responses, so values come back as bytes.
        return value.encode() if isinstance(value, str) else value

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None,
                  only_if_absent: bool = False) -> bool:
        px = None if ttl_seconds is None else _millis(ttl_seconds)
        with translate_errors(self.address):
            # A plain SET (no KEEPTTL) drops an earlier expiry, as the port requires.
            stored = await self.client.set(self.prefix + key, bytes(value), px=px,
                                           nx=only_if_absent)
        return bool(stored)

    async def delete(self, key: str) -> bool:
        with translate_errors(self.address):
            removed: int = await self.client.delete(self.prefix + key)
        return removed > 0

    async def incr(self, key: str, *, ttl_seconds: float) -> int:
        window = _millis(ttl_seconds)
        try:
            with translate_errors(self.address):
                count = await self._incr(keys=[self.prefix + key], args=[window])
        except ResponseError as exc:
            raise Invalid(f"cache key {key!r} does not hold a counter") from exc
        return int(count)

    async def ttl(self, key: str) -> float | None:
        with translate_errors(self.address):
            left: int = await self.client.pttl(self.prefix + key)
        # -2: no such key; -1: a key without expiry.
        return None if left < 0 else left / 1000


class RedisHealthCheck:
    """PING through the cache's own pool, so readiness checks the connections in use."""

    def __init__(self, cache: RedisCache, name: str = "redis") -> None:
        self._cache = cache
        self.name = name

    async def check(self) -> None:
        with translate_errors(self._cache.address):
            await self._cache.client.ping()


def redis_cache(url: str, prefix: str = DEFAULT_PREFIX) -> Cache:
    """A cache on ``url``, typed as the port so mypy checks the adapter against it."""
    return RedisCache(url, prefix=prefix)


def redis_health_check(cache: RedisCache) -> HealthCheck:
    return RedisHealthCheck(cache)


@contextmanager
def translate_errors(address: str) -> Iterator[None]:
    """Redis failures as ``Unavailable`` naming the server (never the password)."""
    try:
        yield
    except ResponseError as exc:
        if "not an integer" in str(exc):
            raise  # incr turns this into Invalid: the key holds something else
        raise Unavailable(f"Redis at {address} refused the command: {exc}") from exc
    except (RedisError, OSError) as exc:
        # The address comes from the parsed URL without its password; redis-py's own
        # messages name host and port only.
        raise Unavailable(f"Redis at {address} is not answering: {exc}") from exc


def _millis(ttl_seconds: float) -> int:
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    # Round up so a tiny positive TTL never becomes 0, which Redis rejects.
    return max(1, math.ceil(ttl_seconds * 1000))


def _address(client: aioredis.Redis) -> str:
    kwargs: dict[str, Any] = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
