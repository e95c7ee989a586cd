"""Worker endpoints: long-poll claims, heartbeats, offset-addressed logs, results, release."""

from __future__ import annotations

import asyncio
import re

import attrs
from starlette.requests import Request
from starlette.responses import Response

from adapters.http.schemas.worker import (
    MAX_CLAIM_WAIT,
    TOKEN_ID_HEADER,
    WORKER_ID_HEADER,
    WORKER_LABELS_HEADER,
    WORKER_NAME_HEADER,
    WORKER_VERSION_HEADER,
    ClaimedRun,
    ClaimRequest,
    Completion,
    Fenced,
    HeartbeatReply,
    HeartbeatRequest,
    LogReply,
    PhaseReport,
    RunState,
    parse_labels,
)
from domain.errors import FieldError, Invalid, Unauthenticated
from domain.services import dispatch
from domain.services.dispatch import Dispatch, WorkerIdentity
from domain.services.handover import claim_for_worker
from domain.services.platform import Caller, Platform
from domain.services.tokens import authenticate_token
from entrypoints.http.api import Api, Authenticator, Call, QueryParam, bounded_body, whole_number

V1 = "/api/v1/worker"
RUN = f"{V1}/runs/{{run}}"
MAX_LOG_CHUNK = 1 << 20
# A held claim checks for shutdown between slices: short enough for a graceful stop, long
# enough that the worker registry is not rewritten for every waiting request.
CLAIM_SLICE_SECONDS = 5.0
_WORKER_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


def worker_authenticator(p: Platform) -> Authenticator:
    """Checks the token on every request, so a revoked one is refused at its next request."""

    async def authenticate(request: Request, caller: Caller) -> tuple[Caller, str]:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        token_id = request.headers.get(TOKEN_ID_HEADER, "").strip()
        if scheme.lower() != "bearer" or not secret.strip() or not token_id:
            raise Unauthenticated(
                "workers authenticate with 'Authorization: Bearer <token secret>' and "
                f"'{TOKEN_ID_HEADER}: <token id>'",
                code="token_invalid",
            )
        view = await authenticate_token(p, token_id, secret.strip())
        request.state.secret = secret.strip()
        worker_id = request.headers.get(WORKER_ID_HEADER, "").strip()
        if not _WORKER_ID.match(worker_id):
            raise Invalid(
                f"the {WORKER_ID_HEADER} header is missing or not valid",
                errors=(
                    FieldError(WORKER_ID_HEADER, "expected 1 to 128 of A-Z a-z 0-9 . _ : @ -"),
                ),
            )
        request.state.worker = WorkerIdentity(
            org_id=view.token.org_id,
            worker_id=worker_id,
            token_id=view.token.id,
            name=request.headers.get(WORKER_NAME_HEADER, "")[:128],
            version=request.headers.get(WORKER_VERSION_HEADER, "")[:64],
            labels=tuple(
                sorted(parse_labels(request.headers.get(WORKER_LABELS_HEADER, "")).items())
            ),
        )
        return attrs.evolve(caller, user_id=f"token:{view.token.id}"), view.token.id

    return authenticate


def worker_of(call: Call) -> WorkerIdentity:
    worker: WorkerIdentity = call.request.state.worker
    return worker


def register(api: Api, p: Platform, d: Dispatch, stopping: asyncio.Event) -> None:
    """Declare the worker endpoints; ``stopping`` set means answer held claims and take none."""

    @api.endpoint(
        "POST",
        f"{V1}/claim",
        summary="Claim the next run of the worker's org, waiting up to `wait` seconds (≤ 30); "
        "204 with Retry-After when none came",
        tag="worker",
        body=ClaimRequest,
        response=ClaimedRun,
    )
    async def claim_run(call: Call) -> ClaimedRun | Response:
        body: ClaimRequest = call.body
        worker = worker_of(call)
        wait = min(max(body.wait, 0.0), MAX_CLAIM_WAIT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        # Why a run that came during the wait was not taken: the worker went away (None) or
        # its token was revoked or rotated meanwhile (the error).
        gone: list[Unauthenticated | None] = []

        async def wanted() -> bool:
            if await call.request.is_disconnected():
                gone.append(None)
                return False
            try:
                await authenticate_token(p, worker.token_id, call.request.state.secret)
            except Unauthenticated as exc:
                gone.append(exc)
                return False
            return True

        while not stopping.is_set():
            remaining = deadline - loop.time()
            handover = await claim_for_worker(
                d,
                p.sealer,
                worker,
                min(max(remaining, 0.0), CLAIM_SLICE_SECONDS),
                max(body.busy, 0),
                wanted,
            )
            if handover is None and loop.time() < deadline:
                # Between slices too: the next one takes a ready run before any wait.
                await wanted()
            if gone:
                if gone[0] is not None:
                    raise gone[0]
                return _no_run(0)
            if handover is not None:
                run = handover.lease.run
                return ClaimedRun(
                    run_id=run.id,
                    name=run.name,
                    org_id=run.org_id or worker.org_id,
                    created_at=run.created_at,
                    spec=run.spec,
                    fencing_token=handover.lease.fencing_token,
                    lease_seconds=handover.lease.lease_seconds,
                    heartbeat_seconds=handover.heartbeat_seconds,
                    log_offset=handover.log_offset,
                    env=dict(handover.env),
                    secret_env=list(handover.secret_env),
                    template_id=run.template_id,
                    template_version=run.template_version,
                    grant=run.grant,
                )
            if loop.time() >= deadline:
                # A full long-poll came back empty: poll again at once.
                return _no_run(0 if wait >= 1 else 1)
        return _no_run(2)

    @api.endpoint(
        "POST",
        f"{RUN}/heartbeat",
        summary="Extend the lease; the reply says whether the run was cancelled",
        tag="worker",
        body=HeartbeatRequest,
        response=HeartbeatReply,
    )
    async def heartbeat(call: Call) -> HeartbeatReply:
        body: HeartbeatRequest = call.body
        cancel = await dispatch.heartbeat(
            d, worker_of(call), call.path["run"], body.fencing_token, max(body.busy, 0)
        )
        return HeartbeatReply(cancel=cancel, lease_seconds=d.lease_seconds)

    @api.endpoint(
        "PUT",
        f"{RUN}/logs",
        summary="Store a chunk of output (the raw request body) at `offset`; a resent chunk "
        "is stored once. The reply says whether the run was cancelled, as a heartbeat's does",
        tag="worker",
        response=LogReply,
        query=(
            QueryParam("offset", "where the chunk starts in the run's log", int),
            QueryParam("fencingToken", "the lease's fencing token", int),
        ),
    )
    async def put_logs(call: Call) -> LogReply:
        offset = _int_param(call, "offset")
        token = _int_param(call, "fencingToken")
        data = await bounded_body(call.request, MAX_LOG_CHUNK, "the log chunk is too large")
        size, cancel = await dispatch.append_log(
            d, worker_of(call), call.path["run"], token, offset, data
        )
        return LogReply(size=size, cancel=cancel)

    @api.endpoint(
        "POST",
        f"{RUN}/phases",
        summary="Report a phase's status (started or finished)",
        tag="worker",
        body=PhaseReport,
    )
    async def report_phase(call: Call) -> None:
        body: PhaseReport = call.body
        await dispatch.report_phase(
            d, worker_of(call), call.path["run"], body.fencing_token, body.result()
        )

    @api.endpoint(
        "POST",
        f"{RUN}/complete",
        summary="End the run with its final status; a repeat of the same completion is accepted",
        tag="worker",
        body=Completion,
        response=RunState,
    )
    async def complete(call: Call) -> RunState:
        body: Completion = call.body
        run = await dispatch.complete(
            d,
            worker_of(call),
            call.path["run"],
            body.fencing_token,
            body.status,
            body.reason,
            body.phases,
        )
        return RunState(run.id, run.status, run.reason)

    @api.endpoint(
        "POST",
        f"{RUN}/release",
        summary="Hand the run back unfinished (a draining worker): it is queued again",
        tag="worker",
        body=Fenced,
        response=RunState,
    )
    async def release(call: Call) -> RunState:
        body: Fenced = call.body
        run = await dispatch.release(d, worker_of(call), call.path["run"], body.fencing_token)
        return RunState(run.id, run.status, run.reason)


def _no_run(retry_after: int) -> Response:
    return Response(status_code=204, headers={"Retry-After": str(retry_after)})


def _int_param(call: Call, name: str) -> int:
    return whole_number(call.query.get(name, ""), name, "expected a whole number ≥ 0")



