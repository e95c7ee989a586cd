"""Adapters on Redis (``redis.asyncio``)."""
