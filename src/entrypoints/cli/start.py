"""``opsicle start``: serve a role."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from entrypoints import settings

app = App(name="start", help="Start a server role.")


Listen = Annotated[
    str | None,
    Parameter(help="Address to serve on, host:port. Default: 127.0.0.1:13371"),
]
DataDir = Annotated[
    str | None,
    Parameter(help="Where the embedded stores live. Default: ~/.local/share/opsicle"),
]
DatabaseUrl = Annotated[
    str | None,
    Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in --data-dir"),
]
PublicUrl = Annotated[
    str | None,
    Parameter(help="The URL people reach this server at, used in emails. Default: http://<listen>"),
]


@app.command
def controller(
    *,
    listen: Listen = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    public_url: PublicUrl = None,
) -> int:
    """The REST API for people: accounts, MFA, organisations, roles, tokens, audit.

    Serves /api/v1 (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs), /healthz,
    /readyz and /metrics.
    """
    import asyncio

    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        listen=listen, data_dir=data_dir, database_url=database_url, public_url=public_url
    )
    return asyncio.run(serve_role("controller", resolved))


@app.command
def standalone(
    *,
    listen: Listen = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    public_url: PublicUrl = None,
) -> int:
    """Every role in one process on embedded stores (SQLite, in-process cache): no servers needed.

    Serves the controller's /api/v1, /healthz, /readyz (checks the stores) and /metrics.
    """
    import asyncio

    from entrypoints.serve import serve_role

    resolved = current().with_flags(
        listen=listen, data_dir=data_dir, database_url=database_url, public_url=public_url
    )
    return asyncio.run(serve_role("standalone", resolved))


def current() -> settings.Settings:
    return settings.current.get(settings.load())
