"""Background loops: a stop event, a clock, a jittered interval, backoff only on Unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import attrs

from domain.errors import Unavailable
from domain.ports import Clock

log = logging.getLogger("opsicle.loops")


async def pause(
    clock: Clock, seconds: float, stop: asyncio.Event, wake: asyncio.Event | None = None
) -> bool:
    """Sleep ``seconds`` on ``clock``, cut short when ``stop`` (or ``wake``) is set; True when
    stopped."""
    if stop.is_set():
        return True
    if wake is not None and wake.is_set():
        return False
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    stopper = asyncio.ensure_future(stop.wait())
    waits = {sleeper, stopper}
    if wake is not None:
        waits.add(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return stop.is_set()


@attrs.frozen
class Backoff:
    """Exponential backoff with jitter: half the delay fixed, half random, so a fleet that lost
    its server together does not come back together."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** max(failures - 1, 0))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def jittered(interval: float, rng: random.Random, spread: float = 0.2) -> float:
    return interval * rng.uniform(1 - spread, 1 + spread)


@attrs.define
class Purge:
    """Housekeeping for a loop's pass: one bounded batch of ``step`` (which returns how many
    rows it deleted, at most ``batch``) each pass while batches come back full, then none
    until ``every`` has passed."""

    step: Callable[[], Awaitable[int]]
    clock: Clock
    batch: int
    every: timedelta = timedelta(hours=1)
    due: datetime | None = None

    async def __call__(self) -> None:
        now = self.clock.now()
        if self.due is not None and now < self.due:
            return
        if await self.step() < self.batch:
            self.due = now + self.every


async def service_loop(
    name: str,
    step: Callable[[], Awaitable[object]],
    *,
    stop: asyncio.Event,
    clock: Clock,
    interval: float,
    backoff: Backoff = Backoff(),
    rng: random.Random | None = None,
    wake: asyncio.Event | None = None,
) -> None:
    """Call ``step`` every ``interval`` (jittered) until ``stop`` is set.

    ``Unavailable`` backs off exponentially; any other error is logged with its traceback and
    the loop goes on, since one bad iteration must not end a process's housekeeping, but
    backs off too: a loop with no interval must not spin on an error that repeats.
    Setting ``wake`` cuts a normal pause short (never a backoff): the step runs again at once.
    """
    rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
    failures = 0
    while not stop.is_set():
        if wake is not None:
            # Set while the step runs: a wake-up after this point is seen by the next pause.
            wake.clear()
        try:
            await step()
        except Unavailable as exc:
            failures += 1
            delay = backoff.delay(failures, rng)
            log.warning("%s: %s; trying again in %.1f s", name, exc.message, delay)
        except Exception:
            failures += 1
            delay = max(jittered(interval, rng), backoff.delay(failures, rng))
            log.exception("%s failed; trying again in %.1f s", name, delay)
        else:
            failures = 0
            delay = jittered(interval, rng)
        if await pause(clock, delay, stop, wake if failures == 0 else None):
            return


async def stop_tasks(tasks: list[asyncio.Task[None]], grace: float) -> None:
    """Wait up to ``grace`` seconds for tasks told to stop, then cancel what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
