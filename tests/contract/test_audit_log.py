"""Contract of the AuditLog port: one hash chain without forks, filters and oldest-first pages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from adapters.memory.audit import InMemoryAuditLog
from adapters.mongo.audit import MongoAuditLog, MongoHealthCheck, mongo_client
from adapters.sql.audit import SqlAuditLog
from adapters.sql.engine import create_engine
from domain.audit import AuditEvent, Outcome, digest, first_broken_link
from domain.errors import Conflict, Unavailable
from domain.ports import AuditFilter, AuditLog
from tests.contract.builders import at, audit_event, uid
from tests.contract.mongo_fixture import mongo_database, mongo_url  # noqa: F401


@pytest.fixture(params=["memory", "sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb),
                        "mongo"])
async def audit_log(request: pytest.FixtureRequest) -> AsyncIterator[AuditLog]:
    """Every AuditLog adapter; the SQL legs use conftest's migrated databases."""
    name: str = request.param
    if name == "memory":
        yield InMemoryAuditLog()
    elif name == "mongo":
        client = mongo_client(request.getfixturevalue("mongo_url"))
        try:
            yield MongoAuditLog(client, request.getfixturevalue("mongo_database"))
        finally:
            await client.close()
    else:
        engine = create_engine(request.getfixturevalue(f"{name}_url"))
        try:
            yield SqlAuditLog(engine)
        finally:
            await engine.dispose()


async def _everything(log: AuditLog) -> list[AuditEvent]:
    return [e async for e in log.all()]


async def test_appends_are_chained_to_the_previous_event(audit_log: AuditLog) -> None:
    first = await audit_log.append(audit_event())
    second = await audit_log.append(audit_event())
    assert second.previous_hash == first.hash
    assert first.hash == digest(first)
    events = await _everything(audit_log)
    assert events[-2:] == [first, second]
    assert first_broken_link(events) is None


async def test_concurrent_appends_make_one_chain_without_forks(audit_log: AuditLog) -> None:
    actor = uid("usr")
    appended = await asyncio.gather(*(audit_log.append(audit_event(actor=actor))
                                      for _ in range(20)))
    events = await _everything(audit_log)
    assert first_broken_link(events) is None
    assert len({e.previous_hash for e in events}) == len(events)
    assert {e.id for e in appended} <= {e.id for e in events}


async def test_stored_events_verify_after_reading_back(audit_log: AuditLog) -> None:
    actor = uid("usr")
    plus_two = timezone(timedelta(hours=2))
    stored = await audit_log.append(audit_event(
        actor=actor, at=at(1).astimezone(plus_two), org_id=uid("org"),
        outcome=Outcome.FAILURE, data={"reason": "déjà vu", "ip": "::1"}))
    (read,) = (await audit_log.list(AuditFilter(actor=actor))).items
    assert read == stored
    assert read.at == at(1)
    assert digest(read) == read.hash


async def test_a_duplicate_event_id_is_a_conflict(audit_log: AuditLog) -> None:
    event = audit_event()
    await audit_log.append(event)
    with pytest.raises(Conflict):
        await audit_log.append(event)
    assert first_broken_link(await _everything(audit_log)) is None


async def test_list_filters_by_every_field(audit_log: AuditLog) -> None:
    actor, other, org_id = uid("usr"), uid("usr"), uid("org")
    a = await audit_log.append(audit_event(actor=actor, org_id=org_id, at=at(10)))
    b = await audit_log.append(audit_event(actor=actor, org_id=org_id, verb="delete",
                                           resource_type="run", at=at(20)))
    c = await audit_log.append(audit_event(actor=actor, outcome=Outcome.FAILURE, at=at(30)))
    d = await audit_log.append(audit_event(actor=other, org_id=org_id, at=at(40)))

    async def ids(**kw: object) -> list[str]:
        page = await audit_log.list(AuditFilter(**kw))  # type: ignore[arg-type]
        return [e.id for e in page.items]

    assert await ids(actor=actor) == [a.id, b.id, c.id]
    assert await ids(org_id=org_id) == [a.id, b.id, d.id]
    assert await ids(actor=actor, verb="delete") == [b.id]
    assert await ids(actor=actor, resource_type="run") == [b.id]
    assert await ids(actor=actor, outcome=Outcome.FAILURE) == [c.id]
    assert await ids(actor=actor, outcome=Outcome.SUCCESS) == [a.id, b.id]
    assert await ids(org_id=org_id, since=at(20), until=at(40)) == [b.id]
    assert await ids(actor=uid("nobody")) == []


async def test_pages_go_oldest_first_and_the_cursor_continues(audit_log: AuditLog) -> None:
    actor = uid("usr")
    appended = [await audit_log.append(audit_event(actor=actor, at=at(i))) for i in range(7)]
    seen: list[AuditEvent] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await audit_log.list(AuditFilter(actor=actor), limit=3, cursor=cursor)
        pages += 1
        assert len(page.items) <= 3
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == appended
    assert pages == 3


# ---------------------------------------------------------------- MongoDB only


async def test_mongo_appenders_in_separate_clients_make_one_chain(
        mongo_url: str, mongo_database: str) -> None:  # noqa: F811
    # Each client stands for one controller process with its own connection pool.
    clients = [mongo_client(mongo_url) for _ in range(3)]
    try:
        logs = [MongoAuditLog(c, mongo_database) for c in clients]
        actor = uid("usr")
        await asyncio.gather(*(logs[i % 3].append(audit_event(actor=actor)) for i in range(15)))
        events = [e async for e in logs[0].all()]
        assert first_broken_link(events) is None
        assert len([e for e in events if e.actor == actor]) == 15
    finally:
        for c in clients:
            await c.close()


async def test_mongo_health_check_pings(mongo_url: str) -> None:  # noqa: F811
    client = mongo_client(mongo_url)
    try:
        await MongoHealthCheck(client).check()
    finally:
        await client.close()


async def test_unreachable_mongo_is_unavailable_naming_the_server(tmp_path: Path) -> None:
    # A Unix socket that is not there rather than a refused TCP port: PyMongo 4.20's async
    # monitor, cancelled by close() while it awaits a TCP connect, leaves that socket to the
    # garbage collector (a ResourceWarning under filterwarnings=error). The Unix path fails
    # before any await, so close() has nothing to cancel mid-connect.
    path = str(tmp_path / "mongodb-27017.sock")
    client = mongo_client(f"mongodb://opsicle:s3cret-pw@{quote_plus(path)}/", timeout_ms=300)
    try:
        with pytest.raises(Unavailable) as caught:
            await MongoAuditLog(client, "nowhere").append(audit_event())
        assert f"MongoDB at {path} is not answering" in str(caught.value)
        assert "s3cret-pw" not in str(caught.value)
        with pytest.raises(Unavailable):
            await MongoHealthCheck(client).check()
    finally:
        await client.close()
