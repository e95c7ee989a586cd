"""Webhook callbacks on approval decisions: staged with the decision, sent by a delivery loop.

A decision (approved, rejected, expired) adds one delivery per webhook of the request's policy
in the unit of work that stores the decision, so a process dying right after the commit loses
nothing. ``deliver_due`` leases due deliveries (one sender per delivery at a time), POSTs them,
and records each outcome: 2xx delivered; no answer, 5xx, 408, 425 or 429 tried again later
with exponential backoff and jitter (or after a 429's or 503's Retry-After) until the
webhook's ``maxAttempts``; any other answer given up at once. Delivered and given-up
deliveries are audited; secrets never are. Operators list and inspect an org's deliveries and
put given-up ones back with ``retry_delivery``. Finished deliveries are purged once older than
the retention (``purge_finished``).
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
from domain.permissions import Action, Resource
from domain.ports import (
    Page,
    Sealer,
    UnitOfWork,
    WebhookDeliveryFilter,
    WebhookRequest,
    WebhookSender,
)
from domain.resources import MASK, PolicySpec, PolicyWebhook, with_webhook_secrets
from domain.services.authorization import authorize, unit_of_work
from domain.services.platform import Caller, Platform, record
from domain.webhooks import (
    DeliveryStatus,
    WebhookDelivery,
    after_attempt,
    payload,
    request_headers,
    retried,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

SYSTEM = "system:webhooks"
DELIVERY_BATCH = 20
# Longer than a batch of attempts takes (they run side by side, each bounded by the sender's
# timeout), so a lease only lapses when its sender died.
LEASE_SECONDS = 120.0
# Finished deliveries deleted per unit of work, so a purge never holds a long transaction.
PURGE_BATCH = 500


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
    retry_after: float | None = None
    try:
        opened = open_hook(p.sealer, delivery.hook)
    except Invalid:
        # Sealed under another server key: no attempt can ever authenticate.
        give_up, error = True, "the webhook's secrets cannot be opened with this server's key"
    else:
        request = WebhookRequest(delivery.hook.url, delivery.body.encode(),
                                 request_headers(delivery, opened))
        try:
            reply = await sender.post(request)
            status = reply.status
            error = "" if 200 <= status < 300 else f"HTTP {status}"
            if reply.retry_after:
                retry_after = retry_after_seconds(reply.retry_after, p.clock.now())
        except Unavailable as exc:
            error = exc.message
        except Exception as exc:  # an attempt that broke still counts against maxAttempts
            log.exception("webhook delivery %s to %s broke", delivery.id, where)
            error = type(exc).__name__
    done = after_attempt(delivery, p.clock.now(), status, error, jitter, give_up=give_up,
                         retry_after=retry_after)
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
            "error": shown_error(done)}
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


async def purge_finished(p: Platform, retention: timedelta, *, limit: int = PURGE_BATCH) -> int:
    """Delete at most ``limit`` deliveries that were delivered or given up more than
    ``retention`` ago, in one unit of work; return how many. Their outcome stays in the audit
    log."""
    async with p.uow() as uow:
        purged = await uow.webhooks.purge(p.clock.now() - retention, limit)
        await uow.commit()
    return purged


# ---------------------------------------------------------------- operating


def shown_error(delivery: WebhookDelivery) -> str:
    """The last error with the webhook's URL shown without its query (which may hold a token)."""
    return delivery.last_error.replace(delivery.hook.url, shown_url(delivery.hook.url))


async def _of_org(uow: UnitOfWork, org_id: str, delivery_id: str) -> WebhookDelivery:
    """The org's delivery; another org's answers ``NotFound`` like one that does not exist."""
    delivery = await uow.webhooks.get(delivery_id)
    if delivery.org_id != org_id:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    return delivery


async def list_deliveries(
    p: Platform,
    caller: Caller,
    org_ref: str,
    *,
    approval_id: str | None = None,
    status: DeliveryStatus | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[WebhookDelivery]:
    """An org's webhook deliveries, newest first; needs org_config:view (as its policies)."""
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, org_ref, Action.VIEW, Resource.ORG_CONFIG,
                                 verb="webhook_delivery.list")
        flt = WebhookDeliveryFilter(org_id=access.org.id, approval_id=approval_id or None,
                                    status=status)
        return await uow.webhooks.list(flt, limit=limit, cursor=cursor)


async def get_delivery(p: Platform, caller: Caller, org_ref: str,
                       delivery_id: str) -> WebhookDelivery:
    """One of an org's deliveries; needs org_config:view."""
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, org_ref, Action.VIEW, Resource.ORG_CONFIG,
                                 verb="webhook_delivery.get")
        return await _of_org(uow, access.org.id, delivery_id)


async def retry_delivery(p: Platform, caller: Caller, org_ref: str,
                         delivery_id: str) -> WebhookDelivery:
    """Put a given-up delivery back to be sent now with a fresh attempt budget; needs
    org_config:update. A pending or delivered one is refused (``Conflict``)."""
    async with unit_of_work(p) as uow:
        access = await authorize(p, uow, caller, org_ref, Action.UPDATE, Resource.ORG_CONFIG,
                                 verb="webhook_delivery.retry")
        before = await _of_org(uow, access.org.id, delivery_id)
        again = retried(before, p.clock.now())
        await uow.webhooks.update(again, expected=DeliveryStatus.FAILED)
        await record(p, caller, "webhook.retried", "webhook_delivery", delivery_id,
                     org_id=before.org_id,
                     data={"approval": before.approval_id, "event": before.event,
                           "url": shown_url(before.hook.url), "attempts": str(before.attempts),
                           "status": str(before.last_status or ""), "error": shown_error(before)},
                     uow=uow)
        await uow.commit()
    return again
