"""``opsicle start``: serve a role."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from entrypoints import settings

app = App(name="start", help="Start a server role.")


@app.command
def standalone(
    *,
    listen: Annotated[
        str | None, Parameter(help="Address to serve on, host:port. Default: 127.0.0.1:13371")
    ] = None,
    data_dir: Annotated[
        str | None,
        Parameter(help="Where the embedded stores live. Default: ~/.local/share/opsicle"),
    ] = None,
    database_url: Annotated[
        str | None,
        Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in --data-dir"),
    ] = None,
) -> int:
    """Every role in one process on embedded stores (SQLite, in-process cache): no servers needed.

    Serves /healthz, /readyz (checks the stores) and /metrics.
    """
    import asyncio

    from entrypoints.serve import serve_role

    resolved = settings.current.get(settings.load()).with_flags(
        listen=listen, data_dir=data_dir, database_url=database_url
    )
    return asyncio.run(serve_role("standalone", resolved))
