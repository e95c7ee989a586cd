"""Composition roots: one async context manager per role, owning every client it creates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
from starlette.types import ASGIApp

from adapters.health import CacheHealthCheck
from adapters.memory.cache import InMemoryCache
from adapters.sql.engine import create_engine
from adapters.sql.health import SqlHealthCheck
from adapters.sql.migrate import migrate
from adapters.system import SystemClock
from domain.ports import HealthCheck
from entrypoints.settings import Settings


@attrs.frozen
class Role:
    name: str
    app: ASGIApp


@asynccontextmanager
async def standalone(settings: Settings) -> AsyncIterator[Role]:
    """Every role in one process: SQLite (migrated on start) and an in-process cache."""
    from entrypoints.http.standalone import create_app

    url = settings.database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(url)
    engine = create_engine(url)
    try:
        cache = InMemoryCache(SystemClock())
        checks: list[HealthCheck] = [
            SqlHealthCheck(engine, name="database"),
            CacheHealthCheck(cache),
        ]
        yield Role("standalone", create_app(checks))
    finally:
        await engine.dispose()
