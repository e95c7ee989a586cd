"""Serving a role's app with hypercorn until SIGINT or SIGTERM, then shutting down in order."""

from __future__ import annotations

import asyncio
import logging
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config

from domain.errors import FieldError, Invalid
from entrypoints import bootstrap
from entrypoints.settings import Settings

log = logging.getLogger("opsicle.serve")
ROLES = {"standalone": bootstrap.standalone}


def _bind(listen: str) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(
            f"--listen {listen!r} is not host:port",
            errors=(
                FieldError("listen", f"expected host:port such as 127.0.0.1:13371, got '{listen}'"),
            ),
        )
    return listen


async def serve_role(role: str, settings: Settings) -> int:
    bind = _bind(settings["listen"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    async with ROLES[role](settings) as running:
        log.info("%s serving on http://%s", role, bind)
        await serve(running.app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    log.info("%s stopped", role)
    return 0
