"""A clock tests move by hand, and predictable identifiers."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


class FakeClock:
    """Time that moves only when told: ``advance``, ``set``, or ``sleep``.

    ``sleep`` advances the clock at once and then yields to the event loop, so loops that
    sleep between iterations run without real waiting and other tasks still get a turn.
    """

    def __init__(self, start: datetime = DEFAULT_START, monotonic_start: float = 1000.0) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start.astimezone(UTC)
        self._monotonic = monotonic_start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward; use set() to jump the wall clock")
        self._now += timedelta(seconds=seconds)
        self._monotonic += seconds

    def set(self, now: datetime) -> None:
        """Jump the wall clock (either way, like an NTP step); monotonic time is untouched."""
        if now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware time")
        self._now = now.astimezone(UTC)


class SequentialIdGenerator:
    """Ids ``<prefix>000001``, ``<prefix>000002``, …: readable in failures and sortable."""

    def __init__(self, prefix: str = "id-", width: int = 6) -> None:
        self._prefix = prefix
        self._width = width
        self._counter = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter):0{self._width}d}"
