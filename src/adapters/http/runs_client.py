"""The SDK for the run endpoints: start, list, get, logs by offset, cancel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.runs import LogChunk, RunCancel, RunCreate, RunInfo, RunPage

API = "/api/v1"
T = TypeVar("T")


class RunsClient:
    """Typed calls to the controller's run endpoints; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def _call(self, kind: type[T] | Any, method: str, path: str, **kw: Any) -> T:
        return cast(T, await self.client.call(method, f"{API}{path}", response=kind, **kw))

    def _r(self, run_id: str) -> str:
        return f"/runs/{quote(run_id, safe='')}"

    async def create(
        self,
        template: str,
        org: str,
        variables: Mapping[str, Any] | None = None,
        comment: str = "",
    ) -> RunInfo:
        body = RunCreate(template, org, dict(variables or {}), comment)
        return await self._call(RunInfo, "POST", "/runs", body=body)

    async def get(self, run_id: str) -> RunInfo:
        return await self._call(RunInfo, "GET", self._r(run_id))

    async def list_runs(
        self,
        *,
        org: str | None = None,
        template: str | None = None,
        statuses: Sequence[str] = (),
        requested_by: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RunPage:
        params = {
            "org": org,
            "template": template,
            "status": ",".join(statuses) or None,
            "requestedBy": requested_by,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "limit": limit,
            "cursor": cursor,
        }
        return await self._call(RunPage, "GET", "/runs", params=params)

    async def logs(self, run_id: str, offset: int = 0, limit: int | None = None) -> LogChunk:
        params = {"offset": offset, "limit": limit}
        return await self._call(LogChunk, "GET", f"{self._r(run_id)}/logs", params=params)

    async def cancel(self, run_id: str, reason: str = "") -> RunInfo:
        return await self._call(
            RunInfo, "POST", f"{self._r(run_id)}/cancel", body=RunCancel(reason)
        )
