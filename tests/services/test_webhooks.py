"""Webhooks on approval decisions: sealed secrets, deliveries staged with each decision, and
the delivery loop's retries, give-ups and audit (with a scripted in-memory sender)."""

from __future__ import annotations

import json
import random
import textwrap
from datetime import timedelta

import attrs
import pytest

from adapters.memory.clock import FakeClock
from adapters.memory.webhooks import InMemoryWebhookSender
from adapters.template_reader import read_policy, read_template
from domain.approvals import Verdict
from domain.audit import Outcome
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.permissions import Action
from domain.ports import WebhookReply
from domain.resources import MASK
from domain.services import approvals, orgs, runs, webhooks
from domain.services.platform import Platform
from domain.services.webhooks import deliver_due
from domain.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    DeliveryStatus,
    WebhookDelivery,
    verify,
)
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import unique_code
from tests.services.test_approvals import World
from tests.services.test_templates import org_member, submit

HOOK_URL = "https://hooks.example.com/opsicle"
SECRET_POLICY = """\
apiVersion: v1
type: ApprovalPolicy
metadata: {name: hooked}
spec:
  approvers: ["BOB"]
  webhooks:
    - url: URL
      auth: {basic: {username: opsicle, password: pw-secret-1}}
      signingSecret: signing-secret-1
      maxAttempts: MAX
"""


def policy_text(w: World, url: str = HOOK_URL, max_attempts: int = 4) -> str:
    return (SECRET_POLICY.replace("BOB", w.bob.email).replace("URL", url)
            .replace("MAX", str(max_attempts)))


def ref_template(name: str, policy: str) -> str:
    return (
        f"apiVersion: v1\ntype: AutomationTemplate\nmetadata: {{name: {name}}}\n"
        f"spec:\n  approvalPolicy: {{policyRef: {policy}}}\n"
        "  template:\n    phases: [{name: go, image: busybox, commands: ['true']}]\n"
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def w(clock: FakeClock) -> World:
    p, mailer = memory_platform(clock)
    return World(p, mailer, clock)


async def hooked(w: World, url: str = HOOK_URL, max_attempts: int = 4) -> None:
    """An org with a stored policy that calls ``url`` back, and template 'hooked' under it."""
    await w.setup("inApp: true\n")
    await approvals.create_policy(w.p, w.admin, w.code, policy_text(w, url, max_attempts),
                                  read=read_policy)
    await submit(w.p, w.admin, ref_template("hooked", "hooked"), org=w.code)


async def decide(w: World, verdict: Verdict = Verdict.APPROVE) -> str:
    """Run 'hooked' and have Bob decide; the approval id."""
    view = await runs.create_run(w.p, w.admin, "hooked", org_ref=w.code, read=read_template)
    aid = await w.approval_id(view.run.id)
    await approvals.respond_to(w.p, w.bob, aid, verdict, comment="looks fine")
    return aid


async def deliveries(p: Platform, approval_id: str) -> list[WebhookDelivery]:
    async with p.uow() as uow:
        return await uow.webhooks.of_approval(approval_id)


async def audit_text(p: Platform) -> str:
    return json.dumps([[e.verb, dict(e.data)] async for e in p.audit.all()])


async def test_webhook_secrets_are_sealed_when_stored_and_masked_when_shown(w: World) -> None:
    await hooked(w)
    shown = await approvals.get_policy(w.p, w.admin, w.code, "hooked")
    [hook] = shown.policy.spec.webhooks
    assert hook.auth is not None
    assert (hook.auth.username, hook.auth.password, hook.signing_secret) == (
        "opsicle", MASK, MASK)
    [listed] = await approvals.list_policies(w.p, w.admin, w.code)
    assert listed.policy.spec.webhooks[0].signing_secret == MASK
    async with w.p.uow() as uow:
        [stored] = (await uow.policies.by_name(
            (await uow.orgs.by_code(w.code)).id, "hooked")).policy.spec.webhooks
    assert stored.auth is not None
    assert "pw-secret-1" not in stored.auth.password
    assert w.p.sealer.open(stored.auth.password) == b"pw-secret-1"
    assert w.p.sealer.open(stored.signing_secret) == b"signing-secret-1"
    assert "secret-1" not in await audit_text(w.p)


async def test_stars_keep_the_stored_secret_on_update_and_are_refused_without_one(
        w: World) -> None:
    await hooked(w)
    quoted = f"'{MASK}'"  # YAML reads a bare *** as an alias
    text = policy_text(w).replace("pw-secret-1", quoted).replace("signing-secret-1", quoted)
    shown = await approvals.update_policy(w.p, w.admin, w.code, "hooked", text,
                                          read=read_policy)
    assert shown.policy.spec.webhooks[0].signing_secret == MASK
    async with w.p.uow() as uow:
        org = await uow.orgs.by_code(w.code)
        [kept] = (await uow.policies.by_name(org.id, "hooked")).policy.spec.webhooks
    assert kept.auth is not None and w.p.sealer.open(kept.auth.password) == b"pw-secret-1"
    assert w.p.sealer.open(kept.signing_secret) == b"signing-secret-1"
    moved = text.replace(HOOK_URL, "https://elsewhere.example.com/")
    with pytest.raises(Invalid) as info:
        await approvals.update_policy(w.p, w.admin, w.code, "hooked", moved, read=read_policy)
    assert [e.field for e in info.value.errors] == ["spec.webhooks[0]"]
    with pytest.raises(Invalid):
        await approvals.create_policy(w.p, w.admin, w.code, text.replace("hooked", "other"),
                                      read=read_policy)


async def test_a_decision_stages_its_delivery_in_the_same_commit(w: World) -> None:
    await hooked(w)
    aid = await decide(w)
    [d] = await deliveries(w.p, aid)
    assert (d.event, d.status, d.attempts, d.next_attempt_at) == (
        "approval.approved", DeliveryStatus.PENDING, 0, w.clock.now())
    body = json.loads(d.body)
    assert body["approvalId"] == aid and body["decision"] == "approved"
    assert body["template"]["name"] == "hooked" and body["template"]["version"] == 1
    assert body["org"]["code"] == w.code and body["deliveryId"] == d.id
    assert [x["email"] for x in body["deciders"]] == [w.bob.email]
    assert body["deciders"][0]["comment"] == "looks fine"
    # The delivery keeps the webhook with its secrets sealed, like the policy.
    assert d.hook.auth is not None and w.p.sealer.open(d.hook.auth.password) == b"pw-secret-1"


async def test_rejections_and_expiries_are_called_back_too(w: World) -> None:
    await hooked(w)
    rejected = await decide(w, Verdict.REJECT)
    [d] = await deliveries(w.p, rejected)
    assert d.event == "approval.rejected"
    assert json.loads(d.body)["reason"] == f"rejected by {w.bob.email}: looks fine"
    view = await runs.create_run(w.p, w.admin, "hooked", org_ref=w.code, read=read_template)
    w.clock.advance(3600)
    assert await approvals.expire_due(w.p) == 1
    [e] = await deliveries(w.p, await w.approval_id(view.run.id))
    assert e.event == "approval.expired" and json.loads(e.body)["deciders"] == []


async def test_a_bare_inline_webhook_is_called_back_unsigned(w: World) -> None:
    await w.setup(textwrap.dedent("""\
        approvers: [BOB]
        webhooks: [{url: 'https://hooks.example.com/bare'}]
        """))
    view = await w.run()
    aid = await w.approval_id(view.run.id)
    await approvals.respond_to(w.p, w.bob, aid, Verdict.APPROVE)
    sender = InMemoryWebhookSender()
    assert await deliver_due(w.p, sender) == 1
    [request] = sender.sent
    assert request.url == "https://hooks.example.com/bare"
    assert SIGNATURE_HEADER not in request.headers and "Authorization" not in request.headers


async def test_server_errors_are_retried_with_growing_delays_until_delivered(
        w: World) -> None:
    await hooked(w)
    aid = await decide(w)
    sender = InMemoryWebhookSender([500, 503, 200])
    rng = random.Random(7)
    assert await deliver_due(w.p, sender, rng=rng) == 1
    [d] = await deliveries(w.p, aid)
    first_wait = (d.next_attempt_at - w.clock.now()).total_seconds()
    assert d.status is DeliveryStatus.PENDING and d.attempts == 1 and 5 <= first_wait <= 10
    # Not due yet: nothing is sent before the backoff ends.
    assert await deliver_due(w.p, sender, rng=rng) == 0
    w.clock.advance(first_wait)
    assert await deliver_due(w.p, sender, rng=rng) == 1
    [d] = await deliveries(w.p, aid)
    second_wait = (d.next_attempt_at - w.clock.now()).total_seconds()
    assert d.attempts == 2 and 10 <= second_wait <= 20
    w.clock.advance(second_wait)
    assert await deliver_due(w.p, sender, rng=rng) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts, d.last_status) == (DeliveryStatus.DELIVERED, 3, 200)
    w.clock.advance(3600)
    assert await deliver_due(w.p, sender, rng=rng) == 0
    # Every attempt sent the same bytes under the same delivery id, signed.
    assert len({r.body for r in sender.sent}) == 1
    assert {r.headers[DELIVERY_HEADER] for r in sender.sent} == {d.id}
    assert verify("signing-secret-1", sender.sent[0].body, sender.sent[0].headers[
        SIGNATURE_HEADER])
    delivered = [e async for e in w.p.audit.all() if e.verb == "webhook.delivered"]
    assert len(delivered) == 1 and delivered[0].data["attempts"] == "3"
    assert delivered[0].data["url"] == HOOK_URL
    assert "secret-1" not in await audit_text(w.p)


async def test_a_client_error_is_given_up_at_once_and_audited(w: World) -> None:
    await hooked(w)
    aid = await decide(w)
    sender = InMemoryWebhookSender([404])
    assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts, d.last_error) == (DeliveryStatus.FAILED, 1, "HTTP 404")
    w.clock.advance(3600)
    assert await deliver_due(w.p, sender) == 0 and len(sender.sent) == 1
    [failed] = [e async for e in w.p.audit.all() if e.verb == "webhook.failed"]
    assert failed.outcome is Outcome.FAILURE and failed.data["status"] == "404"


async def test_no_answer_is_retried_until_max_attempts_then_given_up(w: World) -> None:
    await hooked(w, max_attempts=3)
    aid = await decide(w)
    sender = InMemoryWebhookSender(default=None)
    for _ in range(3):
        assert await deliver_due(w.p, sender) == 1
        w.clock.advance(3600)
    assert await deliver_due(w.p, sender) == 0
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts) == (DeliveryStatus.FAILED, 3)
    assert "connection refused" in d.last_error
    assert len([e async for e in w.p.audit.all() if e.verb == "webhook.failed"]) == 1


async def test_a_delivery_sealed_under_another_key_is_given_up(
        w: World, clock: FakeClock) -> None:
    await hooked(w)
    aid = await decide(w)
    other, _ = memory_platform(clock)
    p = attrs.evolve(w.p, sealer=other.sealer)
    sender = InMemoryWebhookSender()
    assert await deliver_due(p, sender) == 1
    assert sender.sent == []
    [d] = await deliveries(p, aid)
    assert d.status is DeliveryStatus.FAILED and "cannot be opened" in d.last_error


# ---------------------------------------------------------------- operating deliveries


async def test_a_429_waits_as_long_as_its_retry_after_asks(w: World) -> None:
    await hooked(w)
    aid = await decide(w)
    sender = InMemoryWebhookSender([WebhookReply(429, "90"), WebhookReply(503, "bogus"), 200])
    assert await deliver_due(w.p, sender, rng=random.Random(1)) == 1
    [d] = await deliveries(w.p, aid)
    assert d.next_attempt_at == w.clock.now() + timedelta(seconds=90)
    w.clock.advance(89)
    assert await deliver_due(w.p, sender) == 0
    w.clock.advance(1)
    assert await deliver_due(w.p, sender, rng=random.Random(1)) == 1
    # An unreadable Retry-After leaves the exponential backoff (10 to 20 s after attempt 2).
    [d] = await deliveries(w.p, aid)
    assert 10 <= (d.next_attempt_at - w.clock.now()).total_seconds() <= 20


async def test_an_org_lists_and_gets_its_deliveries_without_secrets(w: World) -> None:
    await hooked(w, url=HOOK_URL + "?token=query-secret-1")
    first, second = await decide(w), await decide(w)
    await deliver_due(w.p, InMemoryWebhookSender([404, 200]))
    page = await webhooks.list_deliveries(w.p, w.admin, w.code)
    assert [d.approval_id for d in page.items] == [second, first]
    [failed] = (await webhooks.list_deliveries(w.p, w.admin, w.code,
                                               status=DeliveryStatus.FAILED)).items
    [of_first] = (await webhooks.list_deliveries(w.p, w.admin, w.code, approval_id=first)).items
    # Sent oldest first: the first decision's delivery got the 404.
    assert of_first == failed
    got = await webhooks.get_delivery(w.p, w.admin, w.code, failed.id)
    assert got == failed and got.last_error == "HTTP 404"
    paged = await webhooks.list_deliveries(w.p, w.admin, w.code, limit=1)
    rest = await webhooks.list_deliveries(w.p, w.admin, w.code, cursor=paged.next_cursor)
    assert [d.id for d in (*paged.items, *rest.items)] == [d.id for d in page.items]
    assert webhooks.shown_url(got.hook.url) == HOOK_URL


async def test_deliveries_need_org_config_and_stay_inside_their_org(w: World) -> None:
    await hooked(w)
    aid = await decide(w)
    [d] = await deliveries(w.p, aid)
    # Bob may answer requests but has no role on the org's configuration.
    with pytest.raises(Forbidden):
        await webhooks.list_deliveries(w.p, w.bob, w.code)
    with pytest.raises(Forbidden):
        await webhooks.retry_delivery(w.p, w.bob, w.code, d.id)
    viewer = await org_member(w.p, w.mailer, w.admin, w.code, Action.VIEW,
                              org_config=Action.VIEW)
    assert (await webhooks.get_delivery(w.p, viewer, w.code, d.id)).id == d.id
    with pytest.raises(Forbidden):
        await webhooks.retry_delivery(w.p, viewer, w.code, d.id)
    # Another org of the same admin does not see it.
    other = unique_code()
    await orgs.create_org(w.p, w.admin, "Other Operations", other)
    with pytest.raises(NotFound):
        await webhooks.get_delivery(w.p, w.admin, other, d.id)
    assert (await webhooks.list_deliveries(w.p, w.admin, other)).items == ()
    refused = [e async for e in w.p.audit.all() if e.verb.startswith("webhook_delivery.")]
    assert refused and all(e.outcome is Outcome.FAILURE for e in refused)


async def test_a_given_up_delivery_is_retried_once_audited_and_then_delivered(
        w: World) -> None:
    await hooked(w, max_attempts=2)
    aid = await decide(w)
    sender = InMemoryWebhookSender([503, 503])
    [d] = await deliveries(w.p, aid)
    with pytest.raises(Conflict, match="is pending"):
        await webhooks.retry_delivery(w.p, w.admin, w.code, d.id)
    for _ in range(2):
        await deliver_due(w.p, sender)
        w.clock.advance(3600)
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts) == (DeliveryStatus.FAILED, 2)
    again = await webhooks.retry_delivery(w.p, w.admin, w.code, d.id)
    assert (again.status, again.attempts, again.next_attempt_at) == (
        DeliveryStatus.PENDING, 0, w.clock.now())
    with pytest.raises(Conflict, match="is pending"):
        await webhooks.retry_delivery(w.p, w.admin, w.code, d.id)
    [event] = [e async for e in w.p.audit.all() if e.verb == "webhook.retried"]
    assert (event.actor, event.resource_id, event.data["attempts"], event.data["status"]) == (
        w.admin.actor, d.id, "2", "503")
    # The whole budget again: a failure now is retried, not given up at once.
    sender.answer(500, 200)
    assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts) == (DeliveryStatus.PENDING, 1)
    w.clock.advance(3600)
    assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert d.status is DeliveryStatus.DELIVERED
    with pytest.raises(Conflict, match="was delivered"):
        await webhooks.retry_delivery(w.p, w.admin, w.code, d.id)
    assert "secret-1" not in await audit_text(w.p)
