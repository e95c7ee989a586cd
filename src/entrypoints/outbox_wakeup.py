"""Units of work that wake the outbox relay once they commit a queue message."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from domain.outbox import OutboxMessage
from domain.ports import OutboxRepository, UnitOfWork, UnitOfWorkFactory


class _NotingOutbox:
    def __init__(self, inner: OutboxRepository, noted: Callable[[str], None]) -> None:
        self._inner = inner
        self._noted = noted

    async def add(self, message: OutboxMessage) -> None:
        await self._inner.add(message)
        self._noted(message.topic)

    async def pending(self, limit: int = 100) -> builtins.list[OutboxMessage]:
        return await self._inner.pending(limit)

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        await self._inner.mark_published(ids, at)


class WakingUnitOfWork:
    """``inner``, calling ``committed`` with their topics after a commit that made outbox
    messages visible.

    The relay in this process then publishes it at once instead of at its next poll; messages
    committed by other processes still wait for the poll.
    """

    def __init__(self, inner: UnitOfWork, committed: Callable[[Collection[str]], None]) -> None:
        self._inner = inner
        self._committed = committed
        self._staged: set[str] = set()
        self.outbox: OutboxRepository = _NotingOutbox(inner.outbox, self._stage)

    def __getattr__(self, name: str) -> Any:
        # Every other repository is the inner unit's own, whichever the port has.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def _stage(self, topic: str) -> None:
        self._staged.add(topic)

    async def __aenter__(self) -> WakingUnitOfWork:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._inner.commit()
        if self._staged:
            topics, self._staged = self._staged, set()
            self._committed(topics)

    async def rollback(self) -> None:
        await self._inner.rollback()
        self._staged = set()


def waking(
    factory: UnitOfWorkFactory, committed: Callable[[Collection[str]], None]
) -> UnitOfWorkFactory:
    """Units of work from ``factory`` that call ``committed`` as ``WakingUnitOfWork`` does."""
    return lambda: WakingUnitOfWork(factory(), committed)
