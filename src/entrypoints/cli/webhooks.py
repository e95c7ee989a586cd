"""Webhook delivery commands: list an org's deliveries, show one, retry a given-up one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import Parameter

from entrypoints.cli import verbs
from entrypoints.cli.client import current, run, say, show

if TYPE_CHECKING:
    from adapters.http.controller_client import ControllerClient
    from adapters.http.schemas.webhooks import WebhookDeliveryInfo
    from adapters.http.webhook_deliveries_client import WebhookDeliveriesClient

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
Org = Annotated[str, Parameter(name="--org", help="The organisation (code or id).")]
DeliveryId = Annotated[str, Parameter(help="The webhook delivery's id.")]
COLUMNS = ("id", "approvalId", "event", "status", "attempts", "lastStatus", "nextAttemptAt",
           "url")


def _deliveries(c: ControllerClient) -> WebhookDeliveriesClient:
    from adapters.http.webhook_deliveries_client import WebhookDeliveriesClient

    return WebhookDeliveriesClient(c)


def _row(info: WebhookDeliveryInfo) -> dict[str, Any]:
    return {"id": info.id, "approvalId": info.approval_id, "event": info.event,
            "status": info.status.value, "attempts": f"{info.attempts}/{info.max_attempts}",
            "lastStatus": info.last_status or info.last_error[:40],
            "nextAttemptAt": info.next_attempt_at.isoformat(timespec="seconds")
            if info.next_attempt_at else "", "url": info.url}


def _summary(info: WebhookDeliveryInfo) -> str:
    tried = f"{info.attempts} of {info.max_attempts} attempt(s)"
    if info.status.value == "pending":
        when = info.next_attempt_at.isoformat(timespec="seconds") if info.next_attempt_at else ""
        return f"pending after {tried}; next attempt at {when}"
    answer = f"HTTP {info.last_status}" if info.last_status else info.last_error or "no answer"
    return f"{info.status.value} after {tried} (last answer: {answer})"


@verbs.list_.command(name="webhook-deliveries")
def list_deliveries(
    *,
    org: Org,
    approval: Annotated[
        str | None, Parameter(help="Only the deliveries of this approval request (its id).")
    ] = None,
    status: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        Parameter(help="Only deliveries in this state (failed: given up)."),
    ] = None,
    limit: Annotated[int, Parameter(help="At most this many.")] = 50,
    cursor: Annotated[str | None, Parameter(help="Continue after an earlier page.")] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """List an org's approval webhook deliveries, newest first (needs org_config:view)."""
    page = run(controller_url, lambda c: _deliveries(c).list_deliveries(
        org, approval=approval, status=status, limit=limit, cursor=cursor))
    if current()["output"] == "text":
        show([_row(i) for i in page.items], columns=COLUMNS)
        if page.next_cursor:
            say(f"more: opsicle list webhook-deliveries --org {org} --cursor {page.next_cursor}")
    else:
        show(page)
    return 0


@verbs.get.command(name="webhook-delivery")
def get_delivery(delivery_id: DeliveryId, /, *, org: Org,
                 controller_url: ControllerUrl = None) -> int:
    """Show a webhook delivery: its URL (without query), attempts, the last answer or error,
    and when it is tried next."""
    info = run(controller_url, lambda c: _deliveries(c).get(org, delivery_id))
    say(f"webhook delivery {info.id} of approval {info.approval_id}: {_summary(info)}")
    show(info)
    return 0


@verbs.retry.command(name="webhook-delivery")
def retry_delivery(delivery_id: DeliveryId, /, *, org: Org,
                   controller_url: ControllerUrl = None) -> int:
    """Send a given-up (failed) webhook delivery again, with the webhook's whole attempt
    budget (needs org_config:update); a pending or delivered one is refused."""
    info = run(controller_url, lambda c: _deliveries(c).retry(org, delivery_id))
    say(f"webhook delivery {info.id} is pending again: the next attempt is due now")
    if current()["output"] != "text":
        show(info)
    return 0
