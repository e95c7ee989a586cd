"""Run logs in memory, with the offset rules of the SQL store."""

from __future__ import annotations

from domain.errors import Conflict, FieldError, Invalid
from domain.ports import RunLogStore


class InMemoryRunLogStore:
    def __init__(self) -> None:
        self._logs: dict[str, bytearray] = {}

    async def append(self, run_id: str, offset: int, data: bytes) -> int:
        if offset < 0:
            raise Invalid("a log offset cannot be negative", errors=(FieldError("offset", "< 0"),))
        log = self._logs.setdefault(run_id, bytearray())
        size = len(log)
        if offset > size:
            raise Conflict(f"the log of run {run_id} has {size} bytes: "
                           f"expected offset {size}, got {offset}", code="log_offset_mismatch")
        # What the log already holds is ignored; only a tail past the end is new.
        log += data[size - offset:]
        return len(log)

    async def read(self, run_id: str, offset: int = 0, limit: int = 65536) -> bytes:
        if offset < 0 or limit < 0:
            raise Invalid("a log range cannot be negative",
                          errors=(FieldError("offset" if offset < 0 else "limit", "< 0"),))
        return bytes(self._logs.get(run_id, b"")[offset:offset + limit])

    async def size(self, run_id: str) -> int:
        return len(self._logs.get(run_id, b""))


def run_log_store() -> RunLogStore:
    return InMemoryRunLogStore()
