"""Wire types of the webhook delivery endpoints: what was sent where, and how it went."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.ports import Page
from domain.services.webhooks import shown_error, shown_url
from domain.webhooks import DeliveryStatus, WebhookDelivery


@attrs.frozen
class WebhookDeliveryInfo:
    """One delivery; ``url`` has no query or fragment and no secret is ever shown.
    ``next_attempt_at`` is set while it is pending."""

    id: str
    approval_id: str
    org_id: str
    event: str
    url: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    created_at: datetime
    last_status: int | None = None
    last_error: str = ""
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None


@attrs.frozen
class WebhookDeliveryPage:
    items: list[WebhookDeliveryInfo]
    next_cursor: str | None = None


def delivery_out(d: WebhookDelivery) -> WebhookDeliveryInfo:
    return WebhookDeliveryInfo(
        id=d.id, approval_id=d.approval_id, org_id=d.org_id, event=d.event,
        url=shown_url(d.hook.url), status=d.status, attempts=d.attempts,
        max_attempts=d.hook.max_attempts, created_at=d.created_at, last_status=d.last_status,
        last_error=shown_error(d),
        next_attempt_at=d.next_attempt_at if d.status is DeliveryStatus.PENDING else None,
        finished_at=d.finished_at,
    )


def delivery_page_out(page: Page[WebhookDelivery]) -> WebhookDeliveryPage:
    return WebhookDeliveryPage([delivery_out(d) for d in page.items], page.next_cursor)
