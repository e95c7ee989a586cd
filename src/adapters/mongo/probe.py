"""Probing MongoDB (or a wire-compatible server) once: buildInfo's version and a ping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConfigurationError, PyMongoError

from adapters.probes import Probe, unreachable


def _probe(url: str, seconds: float) -> tuple[str, float]:
    # The synchronous client on a thread: the async one, closed while its monitor is still
    # connecting to a server that refused, leaves that socket open.
    ms = max(1, int(seconds * 1000))
    client: MongoClient[dict[str, Any]] = MongoClient(
        url, connect=False, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        info = client.admin.command("buildInfo")
        started = time.perf_counter()
        client.admin.command("ping")
        return str(info.get("version", "unknown")), round(
            (time.perf_counter() - started) * 1000, 1
        )
    finally:
        client.close()


async def probe_mongo(url: str, *, seconds: float = 5.0, store: str = "audit-database") -> Probe:
    """``Unavailable`` names ``store``, the URL (password masked) and why it did not answer."""
    try:
        version, rtt = await asyncio.to_thread(_probe, url, seconds)
    except (PyMongoError, ConfigurationError, ValueError, OSError) as exc:
        raise unreachable(store, url, exc) from exc
    return Probe("MongoDB", version, rtt)
