"""Worker registry use cases: which workers an organisation has, and whether they are online."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.orgs import Organisation
from domain.permissions import Action, Resource
from domain.services.authorization import authorize, decision_for, unit_of_work, user_of
from domain.services.platform import Caller, Platform
from domain.services.runs import WORKER_SILENCE
from domain.workers import Worker


@attrs.frozen
class WorkerView:
    """A worker as the registry last saw it; online when heard from within WORKER_SILENCE."""

    worker: Worker
    org: Organisation
    online: bool


def is_online(worker: Worker, now: datetime) -> bool:
    # An idle worker long-polls (about every 30 s), so silence longer than that means gone.
    return now - worker.last_seen_at <= WORKER_SILENCE


async def list_workers(p: Platform, caller: Caller, org_ref: str | None = None) -> list[WorkerView]:
    """The workers of an org (needs automations:view there), most recently seen first. Without
    an org: the workers of every org of the caller where they may view automations."""
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        if org_ref is not None:
            access = await authorize(
                p, uow, caller, org_ref, Action.VIEW, Resource.AUTOMATIONS, verb="worker.list"
            )
            orgs = [access.org]
        else:
            user_id = user_of(caller)
            orgs = [
                org
                for org in await uow.orgs.of_user(user_id)
                if await decision_for(uow, org.id, user_id, Action.VIEW, Resource.AUTOMATIONS)
            ]
        views = [
            WorkerView(w, org, is_online(w, now))
            for org in orgs
            for w in await uow.workers.of_org(org.id)
        ]
    views.sort(key=lambda v: (v.worker.last_seen_at, v.worker.id), reverse=True)
    return views
