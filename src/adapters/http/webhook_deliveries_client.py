"""The SDK for the webhook delivery endpoints: list, get, and retry an org's deliveries."""

from __future__ import annotations

from typing import Any, TypeVar, cast
from urllib.parse import quote

from adapters.http.controller_client import ControllerClient
from adapters.http.schemas.webhooks import WebhookDeliveryInfo, WebhookDeliveryPage

API = "/api/v1"
T = TypeVar("T")


class WebhookDeliveriesClient:
    """Typed calls to the controller's webhook delivery endpoints; errors arrive as domain
    errors."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client

    async def _call(self, kind: type[T], method: str, path: str, **kw: Any) -> T:
        return cast(T, await self.client.call(method, f"{API}{path}", response=kind, **kw))

    @staticmethod
    def _d(org: str, delivery_id: str | None = None) -> str:
        path = f"/orgs/{quote(org, safe='')}/webhook-deliveries"
        return f"{path}/{quote(delivery_id, safe='')}" if delivery_id is not None else path

    async def list_deliveries(
        self,
        org: str,
        *,
        approval: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> WebhookDeliveryPage:
        params = {"approval": approval, "status": status, "limit": limit, "cursor": cursor}
        return await self._call(WebhookDeliveryPage, "GET", self._d(org), params=params)

    async def get(self, org: str, delivery_id: str) -> WebhookDeliveryInfo:
        return await self._call(WebhookDeliveryInfo, "GET", self._d(org, delivery_id))

    async def retry(self, org: str, delivery_id: str) -> WebhookDeliveryInfo:
        return await self._call(WebhookDeliveryInfo, "POST",
                                f"{self._d(org, delivery_id)}/retry")
