"""The SDK for the worker registry: the workers of an org, or of every org of the caller."""

from __future__ import annotations

from typing import cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.workers import WorkerInfo

API = "/api/v1"


class WorkersClient:
    """Typed calls to the controller's worker registry; errors arrive as domain errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def list_workers(self, org: str | None = None) -> list[WorkerInfo]:
        """An org's workers (code or id), or those of every org you may see runs of."""
        path = f"{API}/orgs/{quote(org, safe='')}/workers" if org else f"{API}/workers"
        return cast(
            list[WorkerInfo], await self.client.call("GET", path, response=list[WorkerInfo])
        )
