"""Run endpoints: start a template, list and get runs, read logs by offset, cancel."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from adapters.http.schemas.runs import (
    LogChunk,
    RunCancel,
    RunCreate,
    RunInfo,
    RunPage,
    log_out,
    page_out,
    run_out,
)
from adapters.template_reader import read_template
from domain.automations import RunStatus
from domain.errors import FieldError, Invalid
from domain.services import runs
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call, QueryParam, whole_number

V1 = "/api/v1"
RUN = f"{V1}/runs/{{run}}"


def register(api: Api, p: Platform) -> None:
    """Declare every run endpoint; ``{run}`` is a run id."""

    @api.endpoint(
        "POST",
        f"{V1}/runs",
        summary="Run a template's default version in an org (queued for its workers)",
        tag="runs",
        body=RunCreate,
        response=RunInfo,
        status=201,
    )
    async def create_run(call: Call) -> RunInfo:
        body: RunCreate = call.body
        view = await runs.create_run(
            p,
            call.caller,
            body.template,
            org_ref=body.org,
            read=read_template,
            variables=body.variables,
            comment=body.comment,
        )
        return run_out(view)

    @api.endpoint(
        "GET",
        f"{V1}/runs",
        summary="List runs, newest first (without org: the runs I asked for)",
        tag="runs",
        response=RunPage,
        query=(
            QueryParam("org", "only this org's runs (code or id)"),
            QueryParam("template", "only runs of this template (id or name)"),
            QueryParam("status", "only these statuses, comma-separated"),
            QueryParam("requestedBy", "only runs this user asked for (id or email)"),
            QueryParam("since", "only runs created at or after this time (ISO 8601)"),
            QueryParam("until", "only runs created before this time (ISO 8601)"),
            QueryParam("limit", "at most this many runs (default 50, at most 200)", int),
            QueryParam("cursor", "continue after the page that returned this cursor"),
        ),
    )
    async def list_runs(call: Call) -> RunPage:
        q = call.query
        query = runs.RunQuery(
            org=q.get("org") or None,
            template=q.get("template") or None,
            statuses=_statuses(q.get("status", "")),
            requested_by=q.get("requestedBy") or None,
            since=_time(q, "since"),
            until=_time(q, "until"),
        )
        page = await runs.list_runs(
            p, call.caller, query, limit=_int(q, "limit", 50), cursor=q.get("cursor") or None
        )
        return page_out(page)

    @api.endpoint("GET", RUN, summary="Get a run and why it waits", tag="runs", response=RunInfo)
    async def get_run(call: Call) -> RunInfo:
        return run_out(await runs.get_run(p, call.caller, call.path["run"]))

    @api.endpoint(
        "GET",
        f"{RUN}/logs",
        summary="Read a run's log (JSON lines) from a byte offset",
        tag="runs",
        response=LogChunk,
        query=(
            QueryParam("offset", "the byte offset to read from (default 0)", int),
            QueryParam("limit", "at most this many bytes (default 65536)", int),
        ),
    )
    async def read_run_logs(call: Call) -> LogChunk:
        page = await runs.read_logs(
            p,
            call.caller,
            call.path["run"],
            _int(call.query, "offset", 0),
            _int(call.query, "limit", runs.DEFAULT_LOG_PAGE),
        )
        return log_out(page)

    @api.endpoint(
        "POST",
        f"{RUN}/cancel",
        summary="Cancel a run (a running one stops at its worker's next log chunk or heartbeat)",
        tag="runs",
        body=RunCancel,
        response=RunInfo,
    )
    async def cancel_run(call: Call) -> RunInfo:
        body: RunCancel = call.body
        return run_out(await runs.cancel_run(p, call.caller, call.path["run"], body.reason))


def _statuses(raw: str) -> tuple[RunStatus, ...]:
    out = []
    for part in raw.split(","):
        if not part.strip():
            continue
        try:
            out.append(RunStatus(part.strip().lower()))
        except ValueError:
            raise Invalid(
                f"unknown run status {part.strip()!r}",
                errors=(
                    FieldError(
                        "status", f"expected some of: {', '.join(s.value for s in RunStatus)}"
                    ),
                ),
            ) from None
    return tuple(out)


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name, "")
    if raw == "":
        return default
    return whole_number(raw, name, "expected a whole number ≥ 0")


def _time(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Invalid(
            f"{name} is not a time",
            errors=(
                FieldError(name, "expected ISO 8601 with a time zone, like 2026-01-01T00:00:00Z"),
            ),
        )
    return parsed
