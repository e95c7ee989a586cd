"""Worker registry endpoints: the workers of an organisation, or of every org of the caller."""

from __future__ import annotations

from adapters.http.schemas.workers import WorkerInfo, worker_out
from domain.services import workers
from domain.services.platform import Platform
from entrypoints.http.api import Api, Call, QueryParam

V1 = "/api/v1"


def register(api: Api, p: Platform) -> None:
    """Declare the registry endpoints; ``{org}`` is an org code or id."""

    @api.endpoint(
        "GET",
        f"{V1}/orgs/{{org}}/workers",
        summary="List an org's workers: labels, version, last seen, runs in progress, online",
        tag="workers",
        response=list[WorkerInfo],
    )
    async def list_org_workers(call: Call) -> list[WorkerInfo]:
        return [worker_out(v) for v in await workers.list_workers(p, call.caller, call.path["org"])]

    @api.endpoint(
        "GET",
        f"{V1}/workers",
        summary="List workers of my orgs (or of one org)",
        tag="workers",
        response=list[WorkerInfo],
        query=(QueryParam("org", "only this org's workers (code or id)"),),
    )
    async def list_workers(call: Call) -> list[WorkerInfo]:
        org = call.query.get("org") or None
        return [worker_out(v) for v in await workers.list_workers(p, call.caller, org)]
