"""Checking the stores the settings name: ``opsicle utils check`` and every role's start-up."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import attrs

from adapters.probes import Probe, mask_url
from domain.errors import OpsicleError, Unavailable
from entrypoints.settings import Settings

STORES = ("database", "audit-database", "cache", "queue")
# The stores each server role opens; the worker opens none (it talks to coordinators).
ROLE_STORES: dict[str, tuple[str, ...]] = {
    "controller": ("database", "audit-database", "cache"),
    "approver": ("database", "audit-database", "cache"),
    "coordinator": STORES,
    "standalone": STORES,
}
CHECK_TIMEOUT = 5.0


@attrs.frozen
class StoreReport:
    """One store: what the settings point at, whether it answered, and what it is."""

    store: str
    url: str  # secrets masked; "-" for an in-process store
    ok: bool
    backend: str = ""
    version: str = ""
    rtt_ms: float | None = None
    detail: str = ""  # the schema state, facts, or why the store is not usable

    def as_row(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def _probe(store: str, settings: Settings, seconds: float) -> Probe | None:
    """The store's probe, or None when the settings keep it inside the database or process."""
    if store == "database":
        from adapters.sql.probe import probe_database
        from entrypoints.database import database_options

        return await probe_database(settings.database_url, seconds=seconds,
                                    options=database_options(settings))
    if store == "audit-database" and settings["mongo-url"]:
        from adapters.mongo.probe import probe_mongo

        return await probe_mongo(str(settings["mongo-url"]), seconds=seconds)
    if store == "cache" and settings["redis-url"]:
        from adapters.redis.probe import probe_redis

        return await probe_redis(str(settings["redis-url"]), seconds=seconds)
    if store == "queue" and settings["nats-url"]:
        from adapters.nats.probe import probe_nats
        from entrypoints.bootstrap import nats_options

        return await probe_nats(nats_options(settings, "check"), seconds=seconds)
    return None


def _url(store: str, settings: Settings) -> str:
    configured = {
        "database": settings.database_url,
        "audit-database": settings["mongo-url"] or settings.database_url,
        "cache": settings["redis-url"],
        "queue": settings["nats-url"] or settings.database_url,
    }[store]
    return mask_url(str(configured)) if configured else "-"


def _database_detail(settings: Settings, probe: Probe) -> tuple[bool, str]:
    from adapters.sql.migrate import schema_problem

    schema, head = probe.facts["schema"], probe.facts["head"]
    current = None if schema == "none" else schema
    embedded = settings.origin("database-url") == "default"
    problem = schema_problem(
        settings.database_url, current, may_migrate=embedded or bool(settings["migrate"])
    )
    if problem:
        return False, problem
    if current == head:
        return True, f"schema at the head ({head})"
    if current is None:
        return True, f"schema empty, head {head}: the first role started creates it"
    return True, f"schema at {schema}, head {head}: roles migrate it on start"


# Where a store lives when the settings give it no server of its own.
INSIDE_THE_DATABASE = {
    "audit-database": "the audit table in the database (set mongo-url for MongoDB)",
    "queue": "the queue table in the database (set nats-url for NATS JetStream)",
}


async def check_store(
    store: str, settings: Settings, seconds: float = CHECK_TIMEOUT
) -> StoreReport:
    """Connect to ``store`` as the roles would and report on it; never raises for a store
    that does not answer."""
    url = _url(store, settings)
    if store == "cache" and not settings["redis-url"]:
        return StoreReport(store, url, True, "in-process",
                           detail="each process's own memory (set redis-url to share it)")
    try:
        probe = await _probe(store, settings, seconds)
    except OpsicleError as exc:
        return StoreReport(store, url, False, detail=exc.message)
    if probe is None:
        # Kept in the database: usable when the database answers.
        database = await check_store("database", settings, seconds)
        return attrs.evolve(database, store=store, ok=bool(database.backend),
                            detail=INSIDE_THE_DATABASE[store] if database.backend
                            else f"kept in the {database.detail}")
    ok, detail = True, ", ".join(f"{k} {v}" for k, v in probe.facts.items() if v)
    if store == "database":
        ok, detail = _database_detail(settings, probe)
    elif store == "queue" and probe.facts.get("jetstream") != "enabled":
        ok, detail = False, f"JetStream is {probe.facts.get('jetstream')}"
    return StoreReport(store, url, ok, probe.backend, probe.version, probe.rtt_ms, detail)


async def check_stores(
    stores: Sequence[str], settings: Settings, seconds: float = CHECK_TIMEOUT
) -> list[StoreReport]:
    return list(await asyncio.gather(*(check_store(s, settings, seconds) for s in stores)))


def failure_line(report: StoreReport) -> str:
    """``<store> at <url>: <why>``, naming the store and its URL once."""
    if report.detail.startswith(report.store):
        return report.detail
    if report.url in report.detail:
        return f"{report.store}: {report.detail}"
    return f"{report.store} at {report.url}: {report.detail}"


async def require_stores(role: str, settings: Settings, seconds: float = CHECK_TIMEOUT) -> None:
    """Before ``role`` opens its stores: every one it needs answers, or ``Unavailable`` with
    one line per store that does not (its name, URL with secrets masked, and why).

    The database's schema is left to the role (it migrates or refuses with its own error).
    """
    # Stores kept in the database are checked with it.
    stores = [s for s in ROLE_STORES[role] if s == "database" or _url(s, settings) != _url(
        "database", settings)]
    reports = await check_stores(stores, settings, seconds)
    # A database that answered (it has a backend) but is behind is the role's to handle.
    lines = [failure_line(r) for r in reports if not r.ok and not (r.store == "database"
                                                                    and r.backend)]
    if len(lines) == 1:
        raise Unavailable(f"{role} cannot start: {lines[0]}")
    if lines:
        raise Unavailable(f"{role} cannot start:\n  " + "\n  ".join(lines))
