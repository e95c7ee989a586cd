"""Webhook delivery endpoints: an org's deliveries, one delivery, and retrying a given-up one."""

from __future__ import annotations

from adapters.http.schemas.webhooks import (
    WebhookDeliveryInfo,
    WebhookDeliveryPage,
    delivery_out,
    delivery_page_out,
)
from domain.errors import FieldError, Invalid
from domain.services import webhooks
from domain.services.platform import Platform
from domain.webhooks import DeliveryStatus
from entrypoints.http.api import Api, Call, QueryParam, whole_number

DELIVERIES = "/api/v1/orgs/{org}/webhook-deliveries"
DELIVERY = f"{DELIVERIES}/{{delivery}}"


def _status(raw: str) -> DeliveryStatus | None:
    if not raw:
        return None
    try:
        return DeliveryStatus(raw.strip().lower())
    except ValueError:
        raise Invalid(f"unknown webhook delivery status '{raw}'", errors=(FieldError(
            "status", f"expected one of: {', '.join(s.value for s in DeliveryStatus)}"),),
        ) from None


def _limit(raw: str) -> int:
    if not raw:
        return 50
    return whole_number(raw, "limit", "expected a whole number from 1 to 1000")


def register(api: Api, p: Platform) -> None:
    """Declare the webhook delivery endpoints; ``{org}`` is a code or id."""

    @api.endpoint(
        "GET",
        DELIVERIES,
        summary="An org's approval webhook deliveries, newest first (org config)",
        tag="webhooks",
        response=WebhookDeliveryPage,
        query=(
            QueryParam("approval", "only the deliveries of this approval request"),
            QueryParam("status", "only this status: pending, delivered or failed"),
            QueryParam("limit", "at most this many (default 50, at most 1000)", int),
            QueryParam("cursor", "continue after the page that returned this cursor"),
        ),
    )
    async def list_deliveries(call: Call) -> WebhookDeliveryPage:
        q = call.query
        page = await webhooks.list_deliveries(
            p, call.caller, call.path["org"], approval_id=q.get("approval") or None,
            status=_status(q.get("status", "")), limit=_limit(q.get("limit", "")),
            cursor=q.get("cursor") or None)
        return delivery_page_out(page)

    @api.endpoint("GET", DELIVERY, summary="Get a webhook delivery: attempts and last answer",
                  tag="webhooks", response=WebhookDeliveryInfo)
    async def get_delivery(call: Call) -> WebhookDeliveryInfo:
        return delivery_out(await webhooks.get_delivery(
            p, call.caller, call.path["org"], call.path["delivery"]))

    @api.endpoint("POST", f"{DELIVERY}/retry",
                  summary="Send a given-up webhook delivery again, with a fresh attempt budget",
                  tag="webhooks", response=WebhookDeliveryInfo)
    async def retry_delivery(call: Call) -> WebhookDeliveryInfo:
        return delivery_out(await webhooks.retry_delivery(
            p, call.caller, call.path["org"], call.path["delivery"]))
