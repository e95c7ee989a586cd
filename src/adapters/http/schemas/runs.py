"""Wire types of the run endpoints: starting runs, their status and phases, log pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from domain.automations import PhaseResult, PhaseStatus, RunStatus
from domain.ports import Page
from domain.services.runs import LogPage, RunView

# ---------------------------------------------------------------- requests


@attrs.frozen
class RunCreate:
    """Start the template's default version in ``org``; variables by id (text or JSON values)."""

    template: str
    org: str
    variables: dict[str, Any] = attrs.field(factory=dict)
    comment: str = ""


@attrs.frozen
class RunCancel:
    reason: str = ""


# ---------------------------------------------------------------- responses


@attrs.frozen
class PhaseInfo:
    name: str
    status: PhaseStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class RunInfo:
    """A run; ``waiting`` says in words why it is where it is."""

    id: str
    name: str
    status: RunStatus
    waiting: str
    created_at: datetime
    phases: list[PhaseInfo]
    variables: dict[str, Any]
    org_id: str | None = None
    template_id: str | None = None
    template_name: str = ""
    template_version: int | None = None
    requested_by: str | None = None
    requested_by_email: str = ""
    comment: str = ""
    reason: str = ""
    attempts: int = 0
    worker_id: str | None = None
    cancel_requested: bool = False
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class RunPage:
    items: list[RunInfo]
    next_cursor: str | None = None


@attrs.frozen
class LogChunk:
    """Whole log lines (JSON, one object per line) from ``offset``; read on at ``nextOffset``."""

    run_id: str
    offset: int
    next_offset: int
    size: int
    data: str
    status: RunStatus
    ended: bool


def phase_out(p: PhaseResult) -> PhaseInfo:
    return PhaseInfo(p.name, p.status, p.exit_code, p.started_at, p.finished_at)


def run_out(view: RunView) -> RunInfo:
    r = view.run
    return RunInfo(
        id=r.id,
        name=r.name,
        status=r.status,
        waiting=view.waiting,
        created_at=r.created_at,
        phases=[phase_out(p) for p in r.phases],
        variables=dict(r.variables),
        org_id=r.org_id,
        template_id=r.template_id,
        template_name=view.template_name or r.name,
        template_version=r.template_version,
        requested_by=r.requested_by,
        requested_by_email=view.requester,
        comment=r.comment,
        reason=r.reason,
        attempts=r.attempts,
        worker_id=r.worker_id,
        cancel_requested=r.cancel_requested,
        updated_at=r.updated_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


def page_out(page: Page[RunView]) -> RunPage:
    return RunPage([run_out(v) for v in page.items], page.next_cursor)


def log_out(page: LogPage) -> LogChunk:
    return LogChunk(
        page.run_id, page.offset, page.next_offset, page.size, page.data, page.status, page.ended
    )
