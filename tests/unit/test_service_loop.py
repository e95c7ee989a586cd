"""The service loop every role's housekeeping runs in: how it paces itself after errors."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from adapters.memory.clock import FakeClock
from domain.errors import Unavailable
from entrypoints.loops import Backoff, Purge, service_loop


async def _pauses(error: Exception, interval: float) -> list[float]:
    """The pauses a loop with ``interval`` takes after its first three failing steps."""
    clock, stop, calls = FakeClock(), asyncio.Event(), 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            stop.set()
        raise error

    await service_loop("test", step, stop=stop, clock=clock, interval=interval,
                       backoff=Backoff(base=1.0, cap=8.0), rng=random.Random(7))
    return clock.slept


async def test_an_unexpected_error_backs_off_instead_of_spinning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pauses = await _pauses(RuntimeError("boom"), interval=0.0)
    assert len(pauses) == 2
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0
    assert "test failed" in caplog.text and "boom" in caplog.text


async def test_an_unavailable_store_backs_off_exponentially() -> None:
    pauses = await _pauses(Unavailable("store down"), interval=0.0)
    assert 0.5 <= pauses[0] <= 1.0 and 1.0 <= pauses[1] <= 2.0


async def test_an_error_never_pauses_less_than_the_interval() -> None:
    pauses = await _pauses(RuntimeError("boom"), interval=30.0)
    assert all(p >= 24.0 for p in pauses)


async def test_a_purge_goes_on_each_pass_while_batches_are_full_then_waits() -> None:
    clock, found = FakeClock(), [10, 10, 3, 10]

    async def step() -> int:
        return found.pop(0)

    purge = Purge(step, clock, batch=10, every=timedelta(hours=1))
    for _ in range(3):
        await purge()  # full, full, then short
    assert found == [10]
    clock.advance(3599)
    await purge()
    assert found == [10]  # not due yet
    clock.advance(1)
    await purge()
    assert found == []
