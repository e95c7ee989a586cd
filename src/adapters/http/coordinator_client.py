"""The worker's link to coordinators: the CoordinatorClient port over HTTP, with failover."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from adapters.http.controller_client import problem_error
from adapters.http.schemas.worker import (
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
    format_labels,
)
from adapters.probes import failure_reason, mask_url
from adapters.serialization import from_json, to_json
from domain.automations import PhaseResult, Run, RunStatus
from domain.errors import Conflict, FieldError, Invalid, NotFound, Unavailable
from domain.ports import Claim, CoordinatorClient

V1 = "/api/v1/worker"
# Beyond the long-poll itself: time for the coordinator to answer once the wait is over.
CLAIM_SLACK_SECONDS = 15.0
MAX_RETRY_AFTER = 30.0
_FAILOVER_STATUSES = frozenset({502, 503, 504})


class HttpCoordinatorClient:
    """Talks to one of several coordinators; sticks to the one that answers and moves on to
    the next when one does not (connection errors, timeouts, 502/503/504).

    ``claim`` honours the coordinator's ``Retry-After`` before it returns None, so a worker
    looping on it polls no faster than it is told to.
    """

    def __init__(
        self,
        urls: Sequence[str],
        token_id: str,
        token: str,
        *,
        worker_id: str,
        name: str = "",
        version: str = "",
        labels: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls if u.strip()]
        if not self.urls:
            raise Invalid(
                "no coordinator URL was given",
                errors=(FieldError("coordinator-url", "give at least one URL"),),
            )
        self._current = 0
        self._timeout = timeout
        self._busy: set[str] = set()
        headers = {
            "authorization": f"Bearer {token}",
            TOKEN_ID_HEADER: token_id,
            WORKER_ID_HEADER: worker_id,
            WORKER_NAME_HEADER: name or worker_id,
            WORKER_VERSION_HEADER: version,
            WORKER_LABELS_HEADER: format_labels(dict(labels or {})),
            "user-agent": f"opsicle-worker/{version}",
        }
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, headers=headers)

    @property
    def current_url(self) -> str:
        return self.urls[self._current]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reachable(self, seconds: float = 5.0) -> str:
        """The first coordinator whose ``/healthz`` answers; ``Unavailable`` naming each URL
        (secrets masked) and why it did not (refused, DNS, timeout …) when none does."""
        tried: list[str] = []
        for base in self.urls:
            try:
                reply = await self._http.get(base + "/healthz", timeout=seconds)
            except httpx.TransportError as exc:
                tried.append(f"{mask_url(base)}: {failure_reason(exc)}")
                continue
            if reply.status_code < 500:
                return base
            tried.append(f"{mask_url(base)}: HTTP {reply.status_code}")
        raise Unavailable(f"no coordinator answered: {'; '.join(tried)}")

    async def claim(self, wait_seconds: float) -> Claim | None:
        body = ClaimRequest(wait=max(0.0, wait_seconds), busy=len(self._busy))
        reply = await self._request(
            "POST", f"{V1}/claim", json=to_json(body), seconds=wait_seconds + CLAIM_SLACK_SECONDS
        )
        if reply.status_code == 204:
            await asyncio.sleep(_retry_after(reply))
            return None
        claimed = from_json(reply.json(), ClaimedRun)
        self._busy.add(claimed.run_id)
        run = Run(
            id=claimed.run_id,
            spec=claimed.spec,
            status=RunStatus.RUNNING,
            created_at=claimed.created_at,
            name=claimed.name,
            org_id=claimed.org_id,
            attempts=claimed.fencing_token,
            phases=tuple(PhaseResult(p.name) for p in claimed.spec.phases),
            template_id=claimed.template_id,
            template_version=claimed.template_version,
            grant=claimed.grant,
        )
        return Claim(
            run=run,
            lease_id=f"{claimed.run_id}/{claimed.fencing_token}",
            fencing_token=claimed.fencing_token,
            lease_seconds=claimed.lease_seconds,
            env=dict(claimed.env),
            secret_env=tuple(claimed.secret_env),
            heartbeat_seconds=claimed.heartbeat_seconds,
            log_offset=claimed.log_offset,
        )

    async def heartbeat(self, claim: Claim) -> bool:
        body = HeartbeatRequest(claim.fencing_token, busy=max(len(self._busy), 1))
        reply = await self._fenced(claim, "POST", "heartbeat", json=to_json(body))
        return not from_json(reply.json(), HeartbeatReply).cancel

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        reply = await self._fenced(
            claim,
            "PUT",
            "logs",
            content=data,
            params={"offset": str(offset), "fencingToken": str(claim.fencing_token)},
            headers={"content-type": "application/octet-stream"},
        )
        return not from_json(reply.json(), LogReply).cancel

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None:
        body = PhaseReport(
            claim.fencing_token,
            result.name,
            result.status,
            result.exit_code,
            result.started_at,
            result.finished_at,
        )
        await self._fenced(claim, "POST", "phases", json=to_json(body))

    async def complete(
        self,
        claim: Claim,
        status: RunStatus,
        reason: str = "",
        phases: Sequence[PhaseResult] = (),
    ) -> None:
        body = Completion(claim.fencing_token, status, reason, tuple(phases))
        await self._fenced(claim, "POST", "complete", json=to_json(body))
        self._busy.discard(claim.run.id)

    async def release(self, claim: Claim) -> None:
        await self._fenced(claim, "POST", "release", json=to_json(Fenced(claim.fencing_token)))
        self._busy.discard(claim.run.id)

    async def _fenced(self, claim: Claim, method: str, action: str, **kw: Any) -> httpx.Response:
        try:
            return await self._request(method, f"{V1}/runs/{claim.run.id}/{action}", **kw)
        except (Conflict, NotFound):
            self._busy.discard(claim.run.id)
            raise

    async def _request(
        self, method: str, path: str, *, seconds: float | None = None, **kw: Any
    ) -> httpx.Response:
        """Try the current coordinator, then each other once; raise ``Unavailable`` when
        none answers, or the domain error of the problem one answered with."""
        tried: list[str] = []
        for step in range(len(self.urls)):
            index = (self._current + step) % len(self.urls)
            base = self.urls[index]
            try:
                reply = await self._http.request(
                    method, base + path, timeout=seconds or self._timeout, **kw
                )
            except httpx.TransportError as exc:
                tried.append(f"{base} ({type(exc).__name__})")
                continue
            if reply.status_code in _FAILOVER_STATUSES:
                tried.append(f"{base} (HTTP {reply.status_code})")
                continue
            self._current = index
            if reply.status_code >= 400:
                raise problem_error(reply)
            return reply
        raise Unavailable(f"no coordinator answered: {', '.join(tried)}")


def _retry_after(reply: httpx.Response) -> float:
    value = reply.headers.get("retry-after", "")
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


def coordinator_client(
    urls: Sequence[str], token_id: str, token: str, **options: Any
) -> CoordinatorClient:
    """An ``HttpCoordinatorClient``, typed as the port."""
    return HttpCoordinatorClient(urls, token_id, token, **options)
