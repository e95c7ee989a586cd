"""Webhook callbacks on approval decisions: staged with the decision, sent by a delivery loop.

A decision (approved, rejected, expired) adds one delivery per webhook of the request's policy
in the unit of work that stores the decision, so a process dying right after the commit loses
nothing. ``deliver_due`` leases due deliveries (one sender per delivery at a time), POSTs them,
and records each outcome: 2xx delivered; no answer, 5xx, 408, 425 or 429 tried again later
with exponential backoff and jitter until the webhook's ``maxAttempts``; any other answer
given up at once. Delivered and given-up deliveries are audited; secrets never are.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from urllib.parse import urlsplit

import attrs

from domain.approvals import Approval
from domain.audit import Outcome
from domain.automations import Run
from domain.errors import Conflict, FieldError, Invalid, NotFound, Unavailable
from domain.ports import Sealer, UnitOfWork, WebhookRequest, WebhookSender
from domain.resources import MASK, PolicySpec, PolicyWebhook, with_webhook_secrets
from domain.services.platform import Caller, Platform, record
from domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    after_attempt,
    payload,
    request_headers,
)

log = logging.getLogger(__name__)

SYSTEM = "system:webhooks"
DELIVERY_BATCH = 20
# Longer than a batch of attempts takes (they run side by side, each bounded by the sender's
# timeout), so a lease only lapses when its sender died.
LEASE_SECONDS = 120.0


# ---------------------------------------------------------------- secrets


def seal_secrets(sealer: Sealer, spec: PolicySpec, previous: PolicySpec | None = None,
                 *, source: str = "<input>") -> PolicySpec:
    """``spec`` as stored: webhook secrets sealed. A secret given as ``***`` (as ``get``
    shows it) keeps the one ``previous`` had for a webhook to the same URL."""
    kept = {h.url: h for h in (previous.webhooks if previous else ())}
    hooks = []
    for i, hook in enumerate(spec.webhooks):
        before = kept.get(hook.url)

        def seal(value: str, old: str, i: int = i) -> str:
            if not value:
                return ""
            if value != MASK:
                return sealer.seal(value.encode())
            if not old:
                raise Invalid(
                    "a webhook secret is '***' but there is no stored secret to keep",
                    errors=(FieldError(f"spec.webhooks[{i}]",
                                       "'***' keeps the stored secret of a webhook to the same "
                                       "URL, and there is none: give the secret itself",
                                       source),),
                )
            return old

        auth, old_auth = hook.auth, before.auth if before is not None else None
        if old_auth is not None and (auth is None or auth.kind != old_auth.kind):
            old_auth = None
        if auth is not None:
            auth = attrs.evolve(
                auth,
                password=seal(auth.password, old_auth.password if old_auth else ""),
                value=seal(auth.value, old_auth.value if old_auth else ""),
            )
        hooks.append(attrs.evolve(hook, auth=auth, signing_secret=seal(
            hook.signing_secret, before.signing_secret if before is not None else "")))
    return attrs.evolve(spec, webhooks=tuple(hooks))


def open_hook(sealer: Sealer, hook: PolicyWebhook) -> PolicyWebhook:
    """``hook`` with its sealed secrets opened; raises ``Invalid`` when one cannot be."""
    return with_webhook_secrets(
        PolicySpec(webhooks=(hook,)), lambda v: sealer.open(v).decode()
    ).webhooks[0]


def shown_url(url: str) -> str:
    """The URL without its query or fragment (which may carry a token), for logs and audit."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


# ---------------------------------------------------------------- staging


async def stage_deliveries(p: Platform, uow: UnitOfWork, approval: Approval, run: Run) -> int:
    """Add a delivery of the decided ``approval`` for each webhook of its policy, in ``uow``
    (the unit that stores the decision); return how many."""
    hooks = approval.policy.webhooks
    if not hooks or not approval.status.decided:
        return 0
    try:
        org_code = (await uow.orgs.get(approval.org_id)).code
    except NotFound:
        org_code = ""
    emails: dict[str, str] = {}
    for user_id in dict.fromkeys((approval.requested_by,
                                  *(r.responder_id for r in approval.responses))):
        try:
            emails[user_id] = (await uow.users.get(user_id)).email
        except NotFound:
            continue
    now = p.clock.now()
    for hook in hooks:
        delivery_id = p.ids.new_id()
        await uow.webhooks.add(WebhookDelivery(
            id=delivery_id,
            approval_id=approval.id,
            org_id=approval.org_id,
            event=f"approval.{approval.status.value}",
            hook=hook,
            body=payload(delivery_id, approval, run, org_code=org_code, emails=emails),
            created_at=now,
            next_attempt_at=now,
        ))
    return len(hooks)


# ---------------------------------------------------------------- delivering


async def deliver_due(
    p: Platform,
    sender: WebhookSender,
    *,
    limit: int = DELIVERY_BATCH,
    lease_seconds: float = LEASE_SECONDS,
    rng: random.Random | None = None,
) -> int:
    """Send the deliveries due now, side by side; return how many were attempted.

    Safe to run in several processes at once: each delivery is leased to one of them."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
    now = p.clock.now()
    token = p.ids.new_id()
    async with p.uow() as uow:
        claimed = await uow.webhooks.claim(
            now, now + timedelta(seconds=lease_seconds), token, limit)
        await uow.commit()
    await asyncio.gather(*(_attempt(p, sender, d, token, rng.random()) for d in claimed))
    return len(claimed)


async def _attempt(
    p: Platform, sender: WebhookSender, delivery: WebhookDelivery, token: str, jitter: float
) -> None:
    where = shown_url(delivery.hook.url)
    give_up = False
    status: int | None = None
    try:
        opened = open_hook(p.sealer, delivery.hook)
    except Invalid:
        # Sealed under another server key: no attempt can ever authenticate.
        give_up, error = True, "the webhook's secrets cannot be opened with this server's key"
    else:
        request = WebhookRequest(delivery.hook.url, delivery.body.encode(),
                                 request_headers(delivery, opened))
        try:
            status = await sender.post(request)
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except Unavailable as exc:
            error = exc.message
        except Exception as exc:  # an attempt that broke still counts against maxAttempts
            log.exception("webhook delivery %s to %s broke", delivery.id, where)
            error = type(exc).__name__
    done = after_attempt(delivery, p.clock.now(), status, error, jitter, give_up=give_up)
    try:
        async with p.uow() as uow:
            await uow.webhooks.finish(done, token)
            await uow.commit()
    except Conflict:
        log.warning("webhook delivery %s: the lease ran out before the attempt ended; "
                    "another sender has it", delivery.id)
        return
    data = {"approval": delivery.approval_id, "event": delivery.event, "url": where,
            "attempts": str(done.attempts), "status": str(status or ""),
            "error": done.last_error}
    if done.status is DeliveryStatus.DELIVERED:
        await record(p, Caller(), "webhook.delivered", "webhook_delivery", delivery.id,
                     org_id=delivery.org_id, actor=SYSTEM, data=data)
    elif done.status is DeliveryStatus.FAILED:
        log.warning("webhook delivery %s to %s given up after %d attempt(s): %s",
                    delivery.id, where, done.attempts, done.last_error)
        await record(p, Caller(), "webhook.failed", "webhook_delivery", delivery.id,
                     org_id=delivery.org_id, actor=SYSTEM, outcome=Outcome.FAILURE, data=data)
    else:
        log.info("webhook delivery %s to %s failed (attempt %d of %d: %s); next try at %s",
                 delivery.id, where, done.attempts, delivery.hook.max_attempts,
                 done.last_error, done.next_attempt_at.isoformat(timespec="seconds"))
