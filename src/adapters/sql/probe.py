"""Probing the SQL store once: server and version, round trip, and the schema revision."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from adapters.probes import Probe, failure_reason, mask_url, timed, unreachable
from adapters.sql.engine import DatabaseOptions, create_engine, is_sqlite
from adapters.sql.migrate import head_revision
from domain.errors import Unavailable


async def probe_database(url: str, *, seconds: float = 5.0, store: str = "database",
                         options: DatabaseOptions | None = None) -> Probe:
    """Connect to ``url`` once; facts ``schema`` (the revision, or ``none``) and ``head``.

    A SQLite file that does not exist yet is not created: it reports schema ``none``, or
    ``Unavailable`` when it could not be created there (no writable directory).
    ``Unavailable`` names ``store``, the URL (password masked) and why it did not answer.
    """
    head = head_revision()
    if is_sqlite(url):
        path = sa.make_url(url).database
        if path and path != ":memory:" and not await asyncio.to_thread(Path(path).exists):
            problem = await asyncio.to_thread(_uncreatable, Path(path))
            if problem:
                raise Unavailable(f"{store} at {mask_url(url)}: {path} cannot be created: "
                                  f"{problem}")
            return Probe("SQLite", sqlite3.sqlite_version, 0.0,
                         {"schema": "none", "head": head, "file": "not created yet"})
    engine = create_engine(url) if is_sqlite(url) else create_engine(
        url, options, connect_args={"connect_timeout": max(1, round(seconds))})
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            _, rtt = await timed(conn.execute(sa.select(1)))
            if is_sqlite(url):
                backend, version = "SQLite", str(
                    (await conn.execute(sa.text("SELECT sqlite_version()"))).scalar_one())
            else:
                version = str((await conn.execute(sa.text("SELECT VERSION()"))).scalar_one())
                backend = "MariaDB" if "mariadb" in version.lower() else "MySQL"
            revision = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision())
    except (sa.exc.SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
        error = unreachable(store, url, exc)
        if not is_sqlite(url) and (options is None or options.tls is None) \
                and failure_reason(exc).startswith("authentication failed"):
            # MySQL/MariaDB refuse a user that requires TLS the way they refuse a bad password.
            error = Unavailable(f"{error.message}; a user that requires TLS needs "
                                "database-tls-ca (or database-tls-cert)")
        raise error from exc
    finally:
        await engine.dispose()
    return Probe(backend, version, rtt, {"schema": revision or "none", "head": head})


def _uncreatable(path: Path) -> str:
    """Why a SQLite file cannot be created at ``path`` (roles make a missing data-dir first, so
    the nearest folder that exists must be a writable directory); empty when it can."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a directory"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the directory {folder} is not writable"
    return ""
