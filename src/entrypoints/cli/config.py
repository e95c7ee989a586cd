"""``opsicle config show`` and ``opsicle run migrations``: settings and the database schema."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from domain.errors import FieldError, Invalid
from entrypoints import settings
from entrypoints.output import console, emit

app = App(name="config", help="Show the effective configuration.")
MASK = "***"


@app.command
def show() -> int:
    """Every setting's effective value and where it came from (flag, OPSICLE_* environment,
    config file, or default); secrets are shown as ***. The database's pool and TLS settings
    say when SQLite ignores them."""
    from entrypoints.database import ignored_by_sqlite

    resolved = settings.current.get(settings.load())
    rows = [
        {
            "setting": name,
            "value": MASK if name in settings.SECRET and resolved[name] else resolved[name],
            "from": resolved.origin(name)
            + (" (ignored: the database is SQLite)" if ignored_by_sqlite(resolved, name) else ""),
        }
        for name in settings.DEFAULTS
    ]
    emit(rows, resolved["output"], columns=("setting", "value", "from"))
    return 0


def migrations(
    *,
    to: Annotated[str, Parameter(help="The revision to migrate to. Default: the newest")] = "head",
    database_url: Annotated[
        str | None,
        Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in data-dir"),
    ] = None,
    data_dir: Annotated[str | None, Parameter(help="Where the embedded stores live.")] = None,
) -> int:
    """Bring the platform database's schema to a revision (the same migrations for SQLite and
    MySQL/MariaDB); prints the revision before and after."""
    import asyncio

    from adapters.sql.migrate import current_revision, migrate
    from entrypoints.database import database_options

    resolved = settings.current.get(settings.load()).with_flags(
        database_url=database_url, data_dir=data_dir
    )
    url = resolved.database_url
    options = database_options(resolved)
    if url.startswith("sqlite"):
        resolved.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> tuple[str | None, str | None]:
        before = await current_revision(url, options)
        await migrate(url, to, options=options)
        return before, await current_revision(url, options)

    before, after = asyncio.run(main())
    if to != "head" and after != to:
        raise Invalid(
            f"the database is at {after}, not {to}",
            errors=(FieldError("to", f"{to} is older than {after}: only upgrades are done"),),
        )
    if resolved["output"] == "text":
        console().print(f"database schema: {before or 'empty'} -> {after}", markup=False)
    else:
        emit({"from": before, "to": after}, resolved["output"])
    return 0
