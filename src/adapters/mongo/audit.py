"""The audit log on MongoDB: one hash chain, advanced by compare-and-swap on a head document."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from adapters.memory.repositories import bad_cursor, check_limit, decode_cursor, encode_cursor
from domain.audit import GENESIS, AuditEvent, Outcome, chain
from domain.errors import Conflict, Unavailable
from domain.ports import AuditFilter, AuditLog, HealthCheck, Page

Doc = dict[str, Any]

EVENTS = "audit_events"
CHAIN = "audit_chain"
HEAD_ID = "head"
DEFAULT_TIMEOUT_MS = 5000
BATCH = 500
# Each lost race means another append won, so this only runs out under absurd contention.
MAX_ATTEMPTS = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def mongo_client(url: str, *, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> AsyncMongoClient[Doc]:
    """A client that returns aware UTC datetimes; the caller owns it (``await client.close()``)."""
    return AsyncMongoClient(url, tz_aware=True, tzinfo=UTC, connect=False,
                            serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                            socketTimeoutMS=timeout_ms)


def server_name(client: AsyncMongoClient[Doc]) -> str:
    """``MongoDB at host:port[,…]`` from the client's seed list, which carries no credentials."""
    seeds = client.topology_description.server_descriptions()
    hosts = [h if p is None else f"{h}:{p}" for h, p in seeds]  # no port: a Unix socket
    return "MongoDB at " + (",".join(hosts) or "(no hosts)")


@contextmanager
def translate_errors(name: str) -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise Unavailable(f"{name} is not answering: {exc}") from exc


class MongoAuditLog:
    """Events live in ``audit_events`` keyed by their id; ``audit_chain`` holds the head.

    The head ``{_id: "head", hash, seq, event}`` names the last event of the chain and carries
    a copy of it. An append advances the head with a compare-and-swap on ``(hash, seq)``, so
    appenders in any number of processes serialise there and the chain cannot fork; the loser
    of a race reads the new head and tries again. The event is inserted after the swap. Should
    its writer die in between, the copy in the head lets the next appender insert it first, so
    the chain never has a hole. Works on a standalone server: no transactions are needed.
    """

    def __init__(self, client: AsyncMongoClient[Doc], database: str = "opsicle") -> None:
        db = client[database]
        self._events: AsyncCollection[Doc] = db[EVENTS]
        self._chain: AsyncCollection[Doc] = db[CHAIN]
        self._name = server_name(client)
        self._ready = False

    async def append(self, event: AuditEvent) -> AuditEvent:
        # The digest covers ``at`` as text, so chain the UTC form the store reads back.
        event = attrs.evolve(event, at=event.at.astimezone(UTC))
        with translate_errors(self._name):
            await self._prepare()
            if await self._events.find_one({"_id": event.id}, {"_id": 1}) is not None:
                raise Conflict(f"audit event {event.id} already exists")
            for _ in range(MAX_ATTEMPTS):
                head = await self._head()
                if not await self._settle(head):
                    continue
                linked = chain(event, head["hash"])
                doc = _doc_of(linked, head["seq"] + 1)
                swapped = await self._chain.find_one_and_update(
                    {"_id": HEAD_ID, "hash": head["hash"], "seq": head["seq"]},
                    {"$set": {"hash": linked.hash, "seq": doc["seq"], "event": doc}})
                if swapped is None:
                    continue  # another appender moved the head first
                await self._store(doc)
                return linked
        raise Unavailable(f"{self._name}: the audit chain head kept moving; gave up appending")

    async def list(self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[AuditEvent]:
        check_limit(limit)
        query: Doc = {}
        for field, value in (("actor", flt.actor), ("org_id", flt.org_id), ("verb", flt.verb),
                             ("resource_type", flt.resource_type)):
            if value is not None:
                query[field] = value
        if flt.outcome is not None:
            query["outcome"] = flt.outcome.value
        span: Doc = {}
        if flt.since is not None:
            span["$gte"] = _micros(flt.since)
        if flt.until is not None:
            span["$lt"] = _micros(flt.until)
        if span:
            query["at_us"] = span
        if cursor is not None:
            query["seq"] = {"$gt": _seq_of(cursor)}
        with translate_errors(self._name):
            await self._prepare()
            docs = await self._events.find(query).sort("seq", ASCENDING).limit(limit + 1) \
                .to_list()
        more = len(docs) > limit
        docs = docs[:limit]
        return Page(tuple(_event_of(d) for d in docs),
                    encode_cursor(docs[-1]["seq"]) if more else None)

    async def all(self) -> AsyncIterator[AuditEvent]:
        after = 0
        while True:
            # Batches by seq rather than one long cursor: nothing stays open between yields.
            with translate_errors(self._name):
                docs = await self._events.find({"seq": {"$gt": after}}) \
                    .sort("seq", ASCENDING).limit(BATCH).to_list()
            for d in docs:
                yield _event_of(d)
            if len(docs) < BATCH:
                return
            after = docs[-1]["seq"]

    async def _prepare(self) -> None:
        if self._ready:
            return
        await self._events.create_indexes([
            IndexModel([("seq", ASCENDING)], unique=True),
            IndexModel([("actor", ASCENDING), ("seq", ASCENDING)]),
            IndexModel([("org_id", ASCENDING), ("seq", ASCENDING)]),
        ])
        with suppress(DuplicateKeyError):  # another process created it first
            await self._chain.insert_one({"_id": HEAD_ID, "hash": GENESIS, "seq": 0,
                                          "event": None})
        self._ready = True

    async def _head(self) -> Doc:
        head = await self._chain.find_one({"_id": HEAD_ID})
        if head is None:
            raise Unavailable(f"{self._name} has no audit chain head")
        return head

    async def _settle(self, head: Doc) -> bool:
        """Make sure the head's event is stored; False when the head had to be moved back."""
        doc = head.get("event")
        if doc is None:
            return True
        try:
            await self._events.insert_one(doc)
        except DuplicateKeyError:
            stored = await self._events.find_one({"_id": doc["_id"]}, {"seq": 1})
            if stored is not None and stored["seq"] == doc["seq"]:
                return True  # its writer, or another settler, stored it already
            # Two appends of one id passed the existence check together and this one lost the
            # insert: take its link off the chain again (once, whoever gets here first).
            await self._retract(doc)
            return False
        return True

    async def _store(self, doc: Doc) -> None:
        try:
            await self._events.insert_one(doc)
        except DuplicateKeyError as exc:
            stored = await self._events.find_one({"_id": doc["_id"]}, {"seq": 1})
            if stored is not None and stored["seq"] == doc["seq"]:
                return  # a settling appender inserted it from the head's copy
            await self._retract(doc)
            raise Conflict(f"audit event {doc['_id']} already exists") from exc

    async def _retract(self, doc: Doc) -> None:
        previous = await self._events.find_one({"seq": doc["seq"] - 1})
        await self._chain.find_one_and_update(
            {"_id": HEAD_ID, "hash": doc["hash"], "seq": doc["seq"]},
            {"$set": {"hash": doc["previous_hash"], "seq": doc["seq"] - 1, "event": previous}})


class MongoHealthCheck:
    def __init__(self, client: AsyncMongoClient[Doc], name: str = "mongodb") -> None:
        self._client = client
        self.name = name

    async def check(self) -> None:
        with translate_errors(server_name(self._client)):
            await self._client.admin.command("ping")


def audit_log(client: AsyncMongoClient[Doc], database: str = "opsicle") -> AuditLog:
    """The audit log in ``database``, typed as the port so mypy checks the adapter."""
    return MongoAuditLog(client, database)


def health_check(client: AsyncMongoClient[Doc]) -> HealthCheck:
    return MongoHealthCheck(client)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _doc_of(e: AuditEvent, seq: int) -> Doc:
    return {
        "_id": e.id,
        "seq": seq,
        # BSON dates keep milliseconds only; ``at_us`` keeps the exact instant the hash covers
        # (and is what filters compare), ``at`` is there for people and tools reading the store.
        "at": e.at,
        "at_us": _micros(e.at),
        "actor": e.actor,
        "verb": e.verb,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "org_id": e.org_id,
        "outcome": e.outcome.value,
        "source_ip": e.source_ip,
        "user_agent": e.user_agent,
        # Pairs, not a sub-document: keys with "." or "$" are awkward as MongoDB field names.
        "data": [[k, v] for k, v in e.data.items()],
        "previous_hash": e.previous_hash,
        "hash": e.hash,
    }


def _event_of(d: Doc) -> AuditEvent:
    return AuditEvent(
        id=d["_id"],
        at=_EPOCH + timedelta(microseconds=d["at_us"]),
        actor=d["actor"],
        verb=d["verb"],
        resource_type=d["resource_type"],
        resource_id=d["resource_id"],
        org_id=d["org_id"],
        outcome=Outcome(d["outcome"]),
        source_ip=d["source_ip"],
        user_agent=d["user_agent"],
        data=dict(d["data"]),
        previous_hash=d["previous_hash"],
        hash=d["hash"],
    )


def _seq_of(cursor: str) -> int:
    (seq,) = decode_cursor(cursor, 1)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise bad_cursor()
    return seq

