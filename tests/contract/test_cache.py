"""The Cache contract, run against every cache adapter."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest

from adapters.memory.cache import InMemoryCache
from adapters.memory.clock import FakeClock
from adapters.redis.cache import RedisCache, RedisHealthCheck, redis_cache
from domain.errors import Invalid, Unavailable
from domain.ports import Cache
from tests.support import port_open, require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@attrs.frozen
class CacheHarness:
    """A cache under test, and how to let time pass for it (fake for memory, real for Redis)."""

    cache: Cache
    elapse: Callable[[float], Awaitable[None]]


async def _memory() -> AsyncIterator[CacheHarness]:
    clock = FakeClock()

    async def elapse(seconds: float) -> None:
        clock.advance(seconds)

    yield CacheHarness(InMemoryCache(clock), elapse)


async def _redis() -> AsyncIterator[CacheHarness]:
    require_service("Redis", port_open("127.0.0.1", 6379), "expected on 127.0.0.1:6379")
    # A prefix of its own: the test never sees, or flushes, anything else on the server.
    cache = RedisCache(REDIS_URL, prefix=f"opsicle-test-{uuid.uuid4().hex[:8]}:")
    try:
        yield CacheHarness(cache, asyncio.sleep)
    finally:
        await cache.aclose()


LEGS: dict[str, Callable[[], AsyncIterator[CacheHarness]]] = {"memory": _memory,
                                                               "redis": _redis}


@pytest.fixture(params=sorted(LEGS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[CacheHarness]:
    async for h in LEGS[request.param]():
        yield h


@pytest.fixture
def key() -> str:
    # Unique keys so legs on a shared server never see each other's data.
    return f"test:{uuid.uuid4().hex}"


async def test_get_of_a_missing_key_is_none(harness: CacheHarness, key: str) -> None:
    assert await harness.cache.get(key) is None
    assert await harness.cache.ttl(key) is None


async def test_set_then_get(harness: CacheHarness, key: str) -> None:
    assert await harness.cache.set(key, b"\x00value\xff")
    assert await harness.cache.get(key) == b"\x00value\xff"
    assert await harness.cache.ttl(key) is None


async def test_set_replaces_the_value(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key, b"one")
    assert await harness.cache.set(key, b"two")
    assert await harness.cache.get(key) == b"two"


async def test_only_if_absent_stores_nothing_when_present(harness: CacheHarness, key: str) -> None:
    assert await harness.cache.set(key, b"first", only_if_absent=True)
    assert not await harness.cache.set(key, b"second", only_if_absent=True)
    assert await harness.cache.get(key) == b"first"


async def test_only_if_absent_succeeds_once_the_key_expired(harness: CacheHarness,
                                                           key: str) -> None:
    await harness.cache.set(key, b"first", ttl_seconds=1)
    await harness.elapse(1.2)
    assert await harness.cache.set(key, b"second", only_if_absent=True)
    assert await harness.cache.get(key) == b"second"


async def test_value_expires_after_its_ttl(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key, b"v", ttl_seconds=1)
    left = await harness.cache.ttl(key)
    assert left is not None
    assert 0 < left <= 1
    await harness.elapse(1.2)
    assert await harness.cache.get(key) is None
    assert await harness.cache.ttl(key) is None


async def test_set_without_ttl_clears_an_earlier_expiry(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key, b"v", ttl_seconds=1)
    await harness.cache.set(key, b"w")
    await harness.elapse(1.2)
    assert await harness.cache.get(key) == b"w"


async def test_delete_says_whether_there_was_a_key(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key, b"v")
    assert await harness.cache.delete(key)
    assert not await harness.cache.delete(key)
    assert await harness.cache.get(key) is None


async def test_delete_of_an_expired_key_is_false(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key, b"v", ttl_seconds=1)
    await harness.elapse(1.2)
    assert not await harness.cache.delete(key)


async def test_incr_counts_from_one(harness: CacheHarness, key: str) -> None:
    assert [await harness.cache.incr(key, ttl_seconds=60) for _ in range(3)] == [1, 2, 3]
    assert await harness.cache.get(key) == b"3"


async def test_incr_window_starts_at_the_first_increment(harness: CacheHarness,
                                                        key: str) -> None:
    await harness.cache.incr(key, ttl_seconds=2)
    await harness.elapse(1.2)
    # A later increment does not push the expiry out: this is a fixed rate-limit window.
    assert await harness.cache.incr(key, ttl_seconds=2) == 2
    left = await harness.cache.ttl(key)
    assert left is not None
    assert left <= 0.8 + 0.05
    await harness.elapse(1.0)
    assert await harness.cache.get(key) is None
    assert await harness.cache.incr(key, ttl_seconds=2) == 1


async def test_keys_are_independent(harness: CacheHarness, key: str) -> None:
    await harness.cache.set(key + ":a", b"a")
    await harness.cache.incr(key + ":b", ttl_seconds=60)
    assert await harness.cache.get(key + ":a") == b"a"
    assert await harness.cache.get(key + ":b") == b"1"
    assert await harness.cache.get(key) is None


# ---------------------------------------------------------------- Redis only


async def test_redis_keys_live_under_the_prefix(key: str) -> None:
    async for h in _redis():
        assert isinstance(h.cache, RedisCache)
        await h.cache.set(key, b"v", ttl_seconds=60)
        assert await h.cache.client.get(h.cache.prefix + key) == b"v"
        assert await h.cache.client.exists(key) == 0


async def test_redis_incr_of_a_non_counter_is_invalid(key: str) -> None:
    async for h in _redis():
        await h.cache.set(key, b"not a number", ttl_seconds=60)
        with pytest.raises(Invalid):
            await h.cache.incr(key, ttl_seconds=60)


async def test_redis_health_check_pings() -> None:
    async for h in _redis():
        assert isinstance(h.cache, RedisCache)
        check = RedisHealthCheck(h.cache)
        await check.check()
        assert check.name == "redis"


async def test_unreachable_redis_is_unavailable_naming_the_address_not_the_password(
        key: str) -> None:
    port = _closed_port()
    cache = redis_cache(f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    assert isinstance(cache, RedisCache)
    try:
        with pytest.raises(Unavailable) as caught:
            await cache.get(key)
        assert f"Redis at 127.0.0.1:{port}" in str(caught.value)
        assert "s3cret-pw" not in str(caught.value)
        with pytest.raises(Unavailable):
            await RedisHealthCheck(cache).check()
    finally:
        await cache.aclose()


def _closed_port() -> int:
    # Bound but never listening: connections to it are refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
