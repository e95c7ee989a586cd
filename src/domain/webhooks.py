"""Webhook deliveries of approval decisions: the payload, its headers and signature, retries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

import attrs

from domain.approvals import Approval
from domain.automations import Run
from domain.errors import Conflict
from domain.resources import PolicyWebhook, WebhookAuth

DELIVERY_HEADER = "Opsicle-Delivery"
EVENT_HEADER = "Opsicle-Event"
SIGNATURE_HEADER = "Opsicle-Signature"
USER_AGENT = "Opsicle-Webhook/1"
# First retry after about this long; each further one waits twice as long, up to the cap.
RETRY_BASE_SECONDS = 10.0
RETRY_CAP_SECONDS = 3600.0
# Client errors worth another try: the receiver timed out, is not ready, or asks to slow down.
RETRIED_CLIENT_ERRORS = frozenset({408, 425, 429})
# Answers whose Retry-After header says when to try again (RFC 9110 section 10.2.3).
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_ERROR = 300


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@attrs.frozen
class WebhookDelivery:
    """One POST of a decision to one webhook, committed with the decision (an outbox row).

    ``hook`` keeps the webhook as the policy had it, secrets sealed; ``body`` is the exact
    JSON sent on every attempt. While a sender works on it, ``lease_token`` names that sender
    and ``lease_until`` when another may take it over.
    """

    id: str
    approval_id: str
    org_id: str
    event: str
    hook: PolicyWebhook
    body: str
    created_at: datetime
    next_attempt_at: datetime
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_error: str = ""
    last_status: int | None = None
    lease_token: str = ""
    lease_until: datetime | None = None
    finished_at: datetime | None = None


class AttemptResult(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    GIVE_UP = "give_up"


def judge(status: int | None) -> AttemptResult:
    """2xx delivered; no answer (``None``), 5xx, 408, 425 and 429 are tried again; any other
    answer (a 3xx redirect, a 4xx) will not change by repeating the request: given up."""
    if status is None or status >= 500 or status in RETRIED_CLIENT_ERRORS:
        return AttemptResult.RETRY
    if 200 <= status < 300:
        return AttemptResult.DELIVERED
    return AttemptResult.GIVE_UP


def retry_delay(attempts: int, jitter: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: exponential, half of it
    fixed and half scaled by ``jitter`` (0 to 1), so receivers that failed together are not
    all tried again at the same moment."""
    ceiling = min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2.0 ** max(attempts - 1, 0))
    return ceiling / 2 + ceiling / 2 * min(max(jitter, 0.0), 1.0)


def retry_after_seconds(value: str, at: datetime) -> float | None:
    """Seconds a ``Retry-After`` header value asks to wait from ``at``: a number of seconds or
    an HTTP date (a date already past is 0); None when the value is neither."""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=at.tzinfo)
    return max((when - at).total_seconds(), 0.0)


def after_attempt(
    delivery: WebhookDelivery,
    at: datetime,
    status: int | None,
    error: str,
    jitter: float,
    *,
    give_up: bool = False,
    retry_after: float | None = None,
) -> WebhookDelivery:
    """The delivery after one attempt that got ``status`` (None: no answer, see ``error``);
    ``give_up`` ends it whatever the answer was. On a 429 or 503, ``retry_after`` (the
    seconds its Retry-After header asked for) replaces the backoff, up to the backoff cap."""
    attempts = delivery.attempts + 1
    result = judge(status)
    if result is AttemptResult.RETRY and (give_up or attempts >= delivery.hook.max_attempts):
        result = AttemptResult.GIVE_UP
    done = result is not AttemptResult.RETRY
    delay = retry_delay(attempts, jitter)
    if retry_after is not None and status in RETRY_AFTER_STATUSES:
        delay = min(max(retry_after, 0.0), RETRY_CAP_SECONDS)
    return attrs.evolve(
        delivery,
        attempts=attempts,
        last_status=status,
        last_error=error[:MAX_ERROR],
        status=DeliveryStatus.DELIVERED if result is AttemptResult.DELIVERED
        else DeliveryStatus.FAILED if done else DeliveryStatus.PENDING,
        next_attempt_at=at if done else at + timedelta(seconds=delay),
        finished_at=at if done else None,
        lease_token="",
        lease_until=None,
    )


def retried(delivery: WebhookDelivery, at: datetime) -> WebhookDelivery:
    """A given-up delivery put back to be sent at ``at`` with the webhook's whole attempt
    budget again (the last answer is kept until the next attempt replaces it); raises
    ``Conflict`` unless it was given up."""
    if delivery.status is DeliveryStatus.PENDING:
        due = delivery.next_attempt_at.isoformat(timespec="seconds")
        raise Conflict(f"webhook delivery {delivery.id} is pending: it is still being tried "
                       f"(next attempt at {due})", code="delivery_not_failed")
    if delivery.status is DeliveryStatus.DELIVERED:
        raise Conflict(f"webhook delivery {delivery.id} was delivered: there is nothing to retry",
                       code="delivery_not_failed")
    return attrs.evolve(delivery, status=DeliveryStatus.PENDING, attempts=0,
                        next_attempt_at=at, finished_at=None, lease_token="", lease_until=None)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def payload(
    delivery_id: str,
    approval: Approval,
    run: Run,
    *,
    org_code: str,
    emails: Mapping[str, str],
) -> str:
    """The JSON body describing a decided request; ``emails`` maps user ids to addresses."""
    data = {
        "event": f"approval.{approval.status.value}",
        "deliveryId": delivery_id,
        "approvalId": approval.id,
        "runId": run.id,
        "org": {"id": approval.org_id, "code": org_code},
        "template": {"id": run.template_id, "name": run.name, "version": run.template_version},
        "decision": approval.status.value,
        "reason": approval.reason,
        "quorum": approval.quorum,
        "requestedBy": {"userId": approval.requested_by,
                        "email": emails.get(approval.requested_by, "")},
        "deciders": [
            {"userId": r.responder_id, "email": emails.get(r.responder_id, ""),
             "verdict": r.verdict.value, "at": r.at.isoformat(), "channel": r.channel,
             "comment": r.comment}
            for r in approval.responses
        ],
        "requestedAt": approval.created_at.isoformat(),
        "expiresAt": approval.expires_at.isoformat(),
        "decidedAt": _iso(approval.decided_at),
    }
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def signing_key(hook: PolicyWebhook) -> str:
    """The secret the body is signed with (opened): ``signingSecret``, else the auth secret
    (basic password, bearer token or header value); "" when the webhook has neither."""
    if hook.signing_secret:
        return hook.signing_secret
    if hook.auth is None:
        return ""
    return hook.auth.password if hook.auth.kind == "basic" else hook.auth.value


def sign(key: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``key``."""
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(key: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    return hmac.compare_digest(sign(key, body), signature)


def _auth_headers(auth: WebhookAuth | None) -> dict[str, str]:
    if auth is None:
        return {}
    if auth.kind == "basic":
        pair = base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    if auth.kind == "bearer":
        return {"Authorization": f"Bearer {auth.value}"}
    return {auth.key: auth.value}


def request_headers(delivery: WebhookDelivery, opened: PolicyWebhook) -> dict[str, str]:
    """Every header of an attempt; ``opened`` is ``delivery.hook`` with its secrets opened."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: delivery.id,
        EVENT_HEADER: delivery.event,
    }
    key = signing_key(opened)
    if key:
        headers[SIGNATURE_HEADER] = sign(key, delivery.body.encode())
    headers.update(_auth_headers(opened.auth))
    return headers
