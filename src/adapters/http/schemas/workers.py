"""Wire types of the worker registry: the workers an organisation has and whether they are on."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.services.workers import WorkerView


@attrs.frozen
class WorkerInfo:
    """A worker as last seen: ``online`` when it was heard from in the last 90 seconds."""

    id: str
    name: str
    org_id: str
    org_code: str
    version: str
    labels: dict[str, str]
    last_seen_at: datetime
    runs_in_progress: int
    online: bool
    token_id: str | None = None


def worker_out(view: WorkerView) -> WorkerInfo:
    w = view.worker
    return WorkerInfo(
        w.id,
        w.name,
        w.org_id,
        view.org.code,
        w.version,
        dict(w.labels),
        w.last_seen_at,
        w.runs_in_progress,
        view.online,
        w.token_id,
    )
