"""``opsicle utils check``: can the stores the settings name be reached, and what are they."""

from __future__ import annotations

from typing import Annotated, Literal

from cyclopts import App, Parameter

from entrypoints import settings

app = App(name="utils", help="Operational utilities.")

Store = Literal["database", "audit-database", "cache", "queue"]


@app.command
def check(
    store: Annotated[
        Store | None, Parameter(help="The store to check. Default: all four")
    ] = None,
    *,
    database_url: Annotated[
        str | None,
        Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in data-dir"),
    ] = None,
    data_dir: Annotated[str | None, Parameter(help="Where the embedded stores live.")] = None,
    mongo_url: Annotated[
        str | None, Parameter(help="MongoDB URL of the audit log. Default: the database")
    ] = None,
    redis_url: Annotated[
        str | None, Parameter(help="Redis URL of the cache. Default: in-process")
    ] = None,
    nats_url: Annotated[
        str | None,
        Parameter(help="NATS server URLs (comma-separated) of the queue. Default: the database"),
    ] = None,
    timeout: Annotated[
        float, Parameter(help="Seconds to wait for each store. Default: 5")
    ] = 5.0,
) -> int:
    """Connect to each store with the settings the roles use (flags > OPSICLE_* environment >
    config file > defaults) and report whether it answers, its server and version, its URL
    (secrets masked), one request's round-trip time, and for the database whether the schema
    is at the head. Exit code 0 when every store checked is usable, 5 otherwise, with one
    line per store that is not, on stderr."""
    import asyncio

    from entrypoints.exitcodes import ExitCode
    from entrypoints.output import console, emit, error_console
    from entrypoints.stores import STORES, check_stores, failure_line

    resolved = settings.current.get(settings.load()).with_flags(
        database_url=database_url,
        data_dir=data_dir,
        mongo_url=mongo_url,
        redis_url=redis_url,
        nats_url=nats_url,
    )
    stores = (store,) if store else STORES
    reports = asyncio.run(check_stores(stores, resolved, max(0.1, timeout)))
    if resolved["output"] == "text":
        out = console()
        for r in reports:
            what = " ".join(x for x in (r.backend, r.version) if x)
            rtt = "" if r.rtt_ms is None else f", {r.rtt_ms:g} ms"
            status = "ok" if r.ok else "FAILED"
            # A store that did not answer has only the reason, which names its URL.
            line = f"{what} at {r.url}{rtt}; {r.detail}" if r.backend else r.detail
            out.print(f"{r.store}: {status}: {line}", markup=False)
    else:
        emit([r.as_row() for r in reports], resolved["output"])
    failing = [r for r in reports if not r.ok]
    err = error_console()
    for report in failing:
        err.print(f"[red]error:[/red] {failure_line(report)}", markup=True)
    return int(ExitCode.UNAVAILABLE if failing else ExitCode.OK)
