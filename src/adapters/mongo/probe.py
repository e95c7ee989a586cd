"""Probing MongoDB (or a wire-compatible server) once: buildInfo's version and a ping."""

from __future__ import annotations

import asyncio

from pymongo.errors import ConfigurationError, PyMongoError

from adapters.mongo.audit import mongo_client
from adapters.probes import Probe, timed, unreachable


async def probe_mongo(url: str, *, timeout: float = 5.0, store: str = "audit-database") -> Probe:
    """``Unavailable`` names ``store``, the URL (password masked) and why it did not answer."""
    try:
        client = mongo_client(url, timeout_ms=max(1, int(timeout * 1000)))
    except (ConfigurationError, ValueError) as exc:
        raise unreachable(store, url, exc) from exc
    try:
        async with asyncio.timeout(timeout + 1):
            info = await client.admin.command("buildInfo")
            _, rtt = await timed(client.admin.command("ping"))
    except (PyMongoError, OSError) as exc:  # TimeoutError is an OSError
        raise unreachable(store, url, exc) from exc
    finally:
        await client.close()
    return Probe("MongoDB", str(info.get("version", "unknown")), rtt)
