"""Alembic migrations run from inside the package, without alembic.ini (works when frozen)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from adapters.sql.engine import create_engine, store_name, translate_errors
from domain.errors import FieldError, Invalid

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    # env.py runs the migrations on this connection instead of opening its own.
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``; an up-to-date database is left as is."""
    engine = create_engine(url)
    try:
        with translate_errors(store_name(url)):
            async with engine.begin() as conn:
                await conn.run_sync(
                    lambda sync: command.upgrade(alembic_config(sync), revision))
    except CommandError as exc:
        raise Invalid(f"cannot migrate to {revision}", errors=(
            FieldError("revision", f"{exc}; expected a revision such as 0001, or head"),
        )) from exc
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    engine = create_engine(url)
    try:
        with translate_errors(store_name(url)):
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()
