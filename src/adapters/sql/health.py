"""Readiness of the SQL store: ``SELECT 1`` through the engine's pool."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sql.engine import store_name, translate_errors
from domain.ports import HealthCheck


class SqlHealthCheck:
    def __init__(self, engine: AsyncEngine, name: str | None = None) -> None:
        self._engine = engine
        self.name = name or store_name(engine.url)

    async def check(self) -> None:
        with translate_errors(self.name):
            async with self._engine.connect() as conn:
                await conn.execute(sa.select(1))


def health_check(engine: AsyncEngine) -> HealthCheck:
    return SqlHealthCheck(engine)
