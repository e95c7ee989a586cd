"""Audit events, hash-chained so that a removed or altered event breaks the chain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

import attrs

GENESIS = "0" * 64


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


@attrs.frozen
class AuditEvent:
    id: str
    at: datetime
    actor: str
    verb: str
    resource_type: str
    resource_id: str = ""
    org_id: str | None = None
    outcome: Outcome = Outcome.SUCCESS
    source_ip: str = ""
    user_agent: str = ""
    data: Mapping[str, str] = attrs.field(factory=dict)
    previous_hash: str = GENESIS
    hash: str = ""


def digest(event: AuditEvent) -> str:
    """SHA-256 over every field but ``hash``, in a fixed canonical JSON form."""
    body = {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "verb": event.verb,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "org_id": event.org_id,
        "outcome": event.outcome.value,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "data": dict(sorted(event.data.items())),
        "previous_hash": event.previous_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def chain(event: AuditEvent, previous_hash: str) -> AuditEvent:
    linked = attrs.evolve(event, previous_hash=previous_hash, hash="")
    return attrs.evolve(linked, hash=digest(linked))


def first_broken_link(events: Iterable[AuditEvent]) -> AuditEvent | None:
    """The first event whose hash or link to its predecessor does not hold, else None."""
    previous = GENESIS
    for event in events:
        if event.previous_hash != previous or digest(event) != event.hash:
            return event
        previous = event.hash
    return None
