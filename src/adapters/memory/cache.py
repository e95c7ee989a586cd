"""An in-process cache with expiry, judged by an injected clock."""

from __future__ import annotations

import attrs

from domain.errors import Invalid
from domain.ports import Clock

# Expired keys are dropped when read; a full sweep every so many writes keeps keys that are
# never read again from piling up.
_SWEEP_EVERY = 1024


@attrs.define
class _Entry:
    value: bytes
    expires_at: float | None  # on the clock's monotonic scale


class InMemoryCache:
    """The Cache port in one process: the embedded default and the fake for tests.

    Every operation completes without awaiting anything, so each is atomic on the event loop.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._writes = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry.value

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None,
                  only_if_absent: bool = False) -> bool:
        _check_ttl(ttl_seconds)
        if only_if_absent and self._live(key) is not None:
            return False
        expires = None if ttl_seconds is None else self._clock.monotonic() + ttl_seconds
        self._entries[key] = _Entry(bytes(value), expires)
        self._wrote()
        return True

    async def delete(self, key: str) -> bool:
        return self._live(key) is not None and self._entries.pop(key, None) is not None

    async def incr(self, key: str, *, ttl_seconds: float) -> int:
        _check_ttl(ttl_seconds)
        entry = self._live(key)
        if entry is None:
            entry = self._entries[key] = _Entry(b"0", None)
        try:
            count = int(entry.value) + 1
        except ValueError as exc:
            raise Invalid(f"cache key {key!r} does not hold a counter") from exc
        entry.value = str(count).encode()
        if entry.expires_at is None:
            # Fixed window: the expiry is set by the first increment and later ones keep it.
            entry.expires_at = self._clock.monotonic() + ttl_seconds
        self._wrote()
        return count

    async def ttl(self, key: str) -> float | None:
        entry = self._live(key)
        if entry is None or entry.expires_at is None:
            return None
        return entry.expires_at - self._clock.monotonic()

    def __len__(self) -> int:
        self._sweep()
        return len(self._entries)

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None \
                and entry.expires_at <= self._clock.monotonic():
            del self._entries[key]
            return None
        return entry

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock.monotonic()
        for key in [k for k, e in self._entries.items()
                    if e.expires_at is not None and e.expires_at <= now]:
            del self._entries[key]


def _check_ttl(ttl_seconds: float | None) -> None:
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
