"""The Cache contract, run against every cache adapter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest

from adapters.memory.cache import InMemoryCache
from adapters.memory.clock import FakeClock
from domain.ports import Cache


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


# A Redis leg is one more entry here: an async generator that skips (or fails under CI) via
# tests.support.require_service, and elapses real time with asyncio.sleep.
LEGS: dict[str, Callable[[], AsyncIterator[CacheHarness]]] = {"memory": _memory}


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
