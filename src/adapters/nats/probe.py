"""Probing NATS once: the server's version, whether JetStream answers, a flush's round trip."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from nats.aio.client import Client as NatsClient

from adapters.nats.connection import NatsOptions
from adapters.probes import Probe, timed, unreachable


async def probe_nats(options: NatsOptions, *, seconds: float = 5.0, store: str = "queue") -> Probe:
    """One connection attempt per server (no reconnecting); facts ``jetstream``: ``enabled``
    when the account's JetStream answers, else why not. ``Unavailable`` names ``store``, the
    servers (credentials masked) and why none answered."""

    failures: list[Exception] = []
    failed = asyncio.Event()

    async def record(exc: Exception) -> None:
        # nats-py reports each failed attempt here and would go on trying: one per server is
        # the answer.
        failures.append(exc)
        if len(failures) >= len(options.servers):
            failed.set()

    client = NatsClient()
    kwargs = options.connect_kwargs() | {
        "allow_reconnect": False,
        "max_reconnect_attempts": 0,
        "connect_timeout": seconds,
    }
    url = ",".join(options.servers)
    try:
        async with asyncio.timeout(seconds * max(1, len(options.servers)) + 1):
            connecting = asyncio.ensure_future(client.connect(**kwargs, error_cb=record))
            giving_up = asyncio.ensure_future(failed.wait())
            await asyncio.wait({connecting, giving_up}, return_when=asyncio.FIRST_COMPLETED)
            giving_up.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                    await connecting
                raise failures[-1]
            connecting.result()
            _, rtt = await timed(client.flush(timeout=max(1, round(seconds))))
            info = dict(client._server_info)
            try:
                await client.jetstream(timeout=seconds).account_info()
                jetstream = "enabled"
            except nats.errors.Error as exc:
                jetstream = f"not available ({type(exc).__name__}: {exc})"
    except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
        raise unreachable(store, url, exc) from exc
    finally:
        with contextlib.suppress(nats.errors.Error, OSError):
            await client.close()
    return Probe("NATS", str(info.get("version", "unknown")), rtt, {"jetstream": jetstream})
