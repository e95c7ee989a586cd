"""Serving a role's app with hypercorn until SIGINT or SIGTERM, then shutting down in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config

from domain.errors import FieldError, Invalid
from entrypoints import approver, bootstrap
from entrypoints.database import database_options
from entrypoints.eventloop import describe
from entrypoints.listen import check_listen
from entrypoints.settings import Settings
from entrypoints.stores import require_stores

log = logging.getLogger("opsicle.serve")
ROLES = {
    "standalone": bootstrap.standalone,
    "controller": bootstrap.controller,
    "coordinator": bootstrap.coordinator,
    "approver": approver.approver_role,
}


def _tls(settings: Settings) -> tuple[str | None, str | None]:
    cert, key = settings["tls-cert"], settings["tls-key"]
    if not cert and not key:
        return None, None
    problems = [
        FieldError(name, "is needed too: HTTPS takes a certificate and its key")
        for name, value in (("tls-cert", cert), ("tls-key", key))
        if not value
    ] + [
        FieldError(name, f"no readable file at {value}")
        for name, value in (("tls-cert", cert), ("tls-key", key))
        if value and not os.access(str(value), os.R_OK)
    ]
    if problems:
        raise Invalid("the TLS settings are not usable", errors=tuple(problems))
    return str(cert), str(key)


async def serve_role(role: str, settings: Settings) -> int:
    certfile, keyfile = _tls(settings)
    database_options(settings)  # unreadable database TLS files: one line before anything starts
    bind = check_listen(settings["listen"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    config.certfile, config.keyfile = certfile, keyfile
    # Every store the role needs answers, or one line per store that does not.
    await require_stores(role, settings)
    async with ROLES[role](settings) as running:

        async def shutdown() -> None:
            await stop.wait()
            # First stop taking work (held claims are answered), then hypercorn drains.
            if running.stopping is not None:
                running.stopping.set()

        scheme = "https" if config.certfile else "http"
        log.info("%s serving on %s://%s (event loop: %s)", role, scheme, bind, describe())
        await serve(running.app, config, shutdown_trigger=shutdown)  # type: ignore[arg-type]
    log.info("%s stopped", role)
    return 0
