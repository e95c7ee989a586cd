"""Probing Redis once: INFO server's version and a PING's round trip."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from adapters.probes import Probe, timed, unreachable


async def probe_redis(url: str, *, seconds: float = 5.0, store: str = "cache") -> Probe:
    """``Unavailable`` names ``store``, the URL (password masked) and why it did not answer."""
    client: aioredis.Redis = aioredis.from_url(
        url, socket_connect_timeout=seconds, socket_timeout=seconds)
    try:
        # A backstop: the client's own timeouts end a silent server's wait, and close it.
        async with asyncio.timeout(2 * seconds + 1):
            info = await client.info("server")
            _, rtt = await timed(client.ping())
    except (RedisError, OSError, ValueError) as exc:  # TimeoutError is an OSError
        raise unreachable(store, url, exc) from exc
    finally:
        await client.aclose()
    version = str(info.get("redis_version") or info.get("valkey_version") or "unknown")
    facts = {"mode": str(info["redis_mode"])} if "redis_mode" in info else {}
    return Probe("Redis", version, rtt, facts)
