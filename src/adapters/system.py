"""The real clock and ULID identifiers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime

from domain.ports import Clock

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_MAX_ULID = (1 << 128) - 1


class SystemClock:
    """Wall time from the operating system, monotonic time for deadlines, asyncio sleep."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


def encode_ulid(value: int) -> str:
    """The 26-character Crockford base32 form of a 128-bit integer."""
    if not 0 <= value <= _MAX_ULID:
        raise ValueError("a ULID is a 128-bit unsigned integer")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def decode_ulid(text: str) -> int:
    """The 128-bit integer a ULID string encodes; raises ``ValueError`` for anything else."""
    if len(text) != 26:
        raise ValueError(f"a ULID has 26 characters, not {len(text)}")
    value = 0
    for char in text.upper():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a Crockford base32 digit")
        value = (value << 5) | digit
    if value > _MAX_ULID:
        raise ValueError("a ULID is at most 7ZZZZZZZZZZZZZZZZZZZZZZZZZ")
    return value


def ulid_timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch stored in a ULID's first 48 bits."""
    return decode_ulid(text) >> _RANDOM_BITS


class UlidIdGenerator:
    """ULIDs: 48 bits of milliseconds then 80 random bits, so ids sort by creation time.

    Within one millisecond (or when the wall clock steps back) the previous id plus one is
    used instead of fresh randomness, so ids from one generator are strictly increasing.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0
        # Ids may be made from worker threads (e.g. a thread-pool store), so the
        # read-modify-write of ``_last`` must be atomic.
        self._lock = threading.Lock()

    def new_id(self) -> str:
        millis = int(self._clock.now().timestamp() * 1000)
        candidate = (millis << _RANDOM_BITS) | int.from_bytes(os.urandom(10), "big")
        with self._lock:
            if candidate >> _RANDOM_BITS <= self._last >> _RANDOM_BITS:
                # Same millisecond or a clock that went back: keep order by counting up.
                candidate = self._last + 1
            if candidate > _MAX_ULID:
                raise OverflowError("ULID space exhausted")
            self._last = candidate
        return encode_ulid(candidate)
