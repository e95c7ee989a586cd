"""Approval webhooks end to end: decisions on SQLite, the httpx sender, a loopback receiver.

Backoff runs on a fake clock (the deliveries' times) so no test waits for a retry.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

import attrs
import pytest

from adapters.http.webhooks import HttpxWebhookSender
from adapters.memory.clock import FakeClock
from adapters.sql.audit import SqlAuditLog
from adapters.sql.engine import create_engine
from adapters.sql.migrate import migrate
from adapters.sql.repositories import unit_of_work_factory
from adapters.system import SystemClock
from adapters.template_reader import read_policy
from domain.services import approvals
from domain.services.platform import Platform
from domain.services.webhooks import deliver_due, purge_finished
from domain.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RETRY_CAP_SECONDS,
    SIGNATURE_HEADER,
    DeliveryStatus,
    verify,
)
from entrypoints.bootstrap import memory_platform
from entrypoints.webhook_delivery import webhook_delivery
from tests.services.test_approvals import World
from tests.services.test_templates import submit
from tests.services.test_webhooks import decide, deliveries, ref_template
from tests.standins.serve import free_port
from tests.standins.webhook_receiver import WebhookReceiver, webhook_receiver

AUTHS = {
    # kind: (the policy's auth and signing secret, the header that must arrive, signing key)
    "basic": ("auth: {basic: {username: opsicle, password: 'pa:ss'}}\n      "
              "signingSecret: sign-basic",
              ("authorization", "Basic " + base64.b64encode(b"opsicle:pa:ss").decode()),
              "sign-basic"),
    "bearer": ("auth: {bearer: {token: tok-123}}",
               ("authorization", "Bearer tok-123"), "tok-123"),
    "header": ("auth: {header: {name: X-Opsicle-Key, value: key-456}}\n      "
               "signingSecret: sign-header",
               ("x-opsicle-key", "key-456"), "sign-header"),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def db_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'opsicle.db'}"
    await migrate(url)
    return url


@pytest.fixture
async def w(clock: FakeClock, db_url: str) -> AsyncIterator[World]:
    """The platform on a SQLite file (the embedded store, audit log included), mail in memory.

    The audit log is the SQL store's: units of work chain their audit events into it."""
    p, mailer = memory_platform(clock)
    engine = create_engine(db_url)
    try:
        stores = attrs.evolve(p, uow=unit_of_work_factory(engine), audit=SqlAuditLog(engine))
        yield World(stores, mailer, clock)
    finally:
        await engine.dispose()


@pytest.fixture
async def sender() -> AsyncIterator[HttpxWebhookSender]:
    async with HttpxWebhookSender(timeout_seconds=5) as s:
        yield s


async def hooked(w: World, url: str, auth: str = AUTHS["basic"][0],
                 max_attempts: int = 5) -> None:
    await w.setup("inApp: true\n")
    text = (
        "apiVersion: v1\ntype: ApprovalPolicy\nmetadata: {name: hooked}\nspec:\n"
        f"  approvers: ['{w.bob.email}']\n  webhooks:\n    - url: {url}\n      {auth}\n"
        f"      maxAttempts: {max_attempts}\n"
    )
    await approvals.create_policy(w.p, w.admin, w.code, text, read=read_policy)
    await submit(w.p, w.admin, ref_template("hooked", "hooked"), org=w.code)


@pytest.mark.parametrize("kind", sorted(AUTHS))
async def test_each_auth_kind_arrives_and_the_signature_verifies(
        w: World, sender: HttpxWebhookSender, kind: str) -> None:
    auth, (header, value), key = AUTHS[kind]
    async with webhook_receiver() as receiver:
        await hooked(w, f"{receiver.url}/hooks/opsicle", auth)
        aid = await decide(w)
        assert await deliver_due(w.p, sender) == 1
    [got] = receiver.received
    assert got.path == "/hooks/opsicle"
    assert got.headers[header] == value
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert got.headers[DELIVERY_HEADER.lower()] == body["deliveryId"]
    assert got.headers[EVENT_HEADER.lower()] == "approval.approved"
    assert body["approvalId"] == aid and body["decision"] == "approved"
    assert verify(key, got.body, got.headers[SIGNATURE_HEADER.lower()])
    assert not verify("another key", got.body, got.headers[SIGNATURE_HEADER.lower()])
    [d] = await deliveries(w.p, aid)
    assert d.status is DeliveryStatus.DELIVERED


async def test_two_server_errors_then_success_is_delivered_once_after_backoff(
        w: World, sender: HttpxWebhookSender, clock: FakeClock) -> None:
    async with webhook_receiver([500, 500, 200]) as receiver:
        await hooked(w, f"{receiver.url}/hook")
        aid = await decide(w)
        waits = []
        for _ in range(3):
            assert await deliver_due(w.p, sender) == 1
            assert await deliver_due(w.p, sender) == 0  # not due again before its backoff
            [d] = await deliveries(w.p, aid)
            if d.status is DeliveryStatus.PENDING:
                waits.append((d.next_attempt_at - clock.now()).total_seconds())
                clock.advance(waits[-1])
        clock.advance(86400)
        assert await deliver_due(w.p, sender) == 0
    assert (d.status, d.attempts, d.last_status) == (DeliveryStatus.DELIVERED, 3, 200)
    assert len(waits) == 2 and 5 <= waits[0] <= 10 <= waits[1] <= 20
    assert len(receiver.received) == 3
    assert len({(r.body, r.headers[DELIVERY_HEADER.lower()]) for r in receiver.received}) == 1
    assert len([e async for e in w.p.audit.all() if e.verb == "webhook.delivered"]) == 1


async def test_a_client_error_is_given_up(w: World, sender: HttpxWebhookSender,
                                          clock: FakeClock) -> None:
    async with webhook_receiver([401]) as receiver:
        await hooked(w, f"{receiver.url}/hook")
        aid = await decide(w)
        assert await deliver_due(w.p, sender) == 1
        clock.advance(86400)
        assert await deliver_due(w.p, sender) == 0
    assert len(receiver.received) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.last_status, d.last_error) == (DeliveryStatus.FAILED, 401, "HTTP 401")
    assert len([e async for e in w.p.audit.all() if e.verb == "webhook.failed"]) == 1


async def test_a_refused_connection_is_retried(w: World, sender: HttpxWebhookSender,
                                              clock: FakeClock) -> None:
    await hooked(w, f"http://127.0.0.1:{free_port()}/hook", max_attempts=2)
    aid = await decide(w)
    assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts, d.last_status) == (DeliveryStatus.PENDING, 1, None)
    assert "could not reach" in d.last_error and d.next_attempt_at > clock.now()
    clock.advance(3600)
    assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts) == (DeliveryStatus.FAILED, 2)


async def test_a_decision_made_before_a_crash_is_delivered_by_a_fresh_loop(
        w: World, clock: FakeClock, db_url: str) -> None:
    async with webhook_receiver() as receiver:
        await hooked(w, f"{receiver.url}/hook")
        # The decision commits; the process dies before any loop sends it.
        aid = await decide(w)
        assert receiver.received == []
        # A new process on the same database and server key, with its own delivery loop.
        engine = create_engine(db_url)
        try:
            fresh = attrs.evolve(w.p, uow=unit_of_work_factory(engine))
            await _deliver_with_loop(fresh, receiver)
            [d] = await deliveries(fresh, aid)
        finally:
            await engine.dispose()
    assert d.status is DeliveryStatus.DELIVERED and len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["approvalId"] == aid


async def _deliver_with_loop(p: Platform, receiver: WebhookReceiver) -> None:
    """Run the roles' delivery loop (its own httpx sender) until the receiver has a request."""
    async with webhook_delivery(p, interval=0.05, loop_clock=SystemClock()):
        for _ in range(1000):
            if receiver.received:
                break
            await asyncio.sleep(0.01)
    # Leaving the block stops the loop once the attempt is recorded.


async def test_two_processes_sending_at_once_post_a_delivery_once(
        w: World, sender: HttpxWebhookSender, db_url: str) -> None:
    async with webhook_receiver() as receiver:
        await hooked(w, f"{receiver.url}/hook")
        aid = await decide(w)
        engine = create_engine(db_url)
        try:
            other = attrs.evolve(w.p, uow=unit_of_work_factory(engine))
            sent = await asyncio.gather(deliver_due(w.p, sender), deliver_due(other, sender))
        finally:
            await engine.dispose()
    assert sorted(sent) == [0, 1] and len(receiver.received) == 1
    [d] = await deliveries(w.p, aid)
    assert d.status is DeliveryStatus.DELIVERED and d.attempts == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_in_seconds_or_as_a_date_sets_the_next_attempt(
        w: World, sender: HttpxWebhookSender, clock: FakeClock, status: int) -> None:
    async with webhook_receiver([status], retry_after="240") as receiver:
        await hooked(w, f"{receiver.url}/hook")
        aid = await decide(w)
        assert await deliver_due(w.p, sender) == 1
        [d] = await deliveries(w.p, aid)
        assert d.next_attempt_at == clock.now() + timedelta(seconds=240)
        assert (d.status, d.last_status) == (DeliveryStatus.PENDING, status)
        clock.advance(239)
        assert await deliver_due(w.p, sender) == 0
        # The next answer names a date five minutes on instead; past the cap it is capped.
        receiver.script.extend([status, status])
        receiver.retry_after = format_datetime(clock.now() + timedelta(seconds=301),
                                               usegmt=True)
        clock.advance(1)
        assert await deliver_due(w.p, sender) == 1
        [d] = await deliveries(w.p, aid)
        assert d.next_attempt_at == clock.now() + timedelta(seconds=300)
        clock.advance(300)
        receiver.retry_after = str(int(RETRY_CAP_SECONDS) * 10)
        assert await deliver_due(w.p, sender) == 1
        [d] = await deliveries(w.p, aid)
        assert d.next_attempt_at == clock.now() + timedelta(seconds=RETRY_CAP_SECONDS)
        clock.advance(RETRY_CAP_SECONDS)
        assert await deliver_due(w.p, sender) == 1
    [d] = await deliveries(w.p, aid)
    assert (d.status, d.attempts) == (DeliveryStatus.DELIVERED, 4)
    assert len(receiver.received) == 4


async def test_the_loop_sender_gives_up_waiting_after_webhook_timeout(
        w: World, clock: FakeClock) -> None:
    """A receiver that accepts the connection and never answers: the delivery loop's own
    sender ends the attempt after ``timeout_seconds`` and the delivery waits for a retry."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    quiet = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = quiet.sockets[0].getsockname()[1]
    try:
        await hooked(w, f"http://127.0.0.1:{port}/hook")
        aid = await decide(w)
        async with webhook_delivery(w.p, interval=0.05, loop_clock=SystemClock(),
                                    timeout_seconds=0.2):
            for _ in range(1000):
                [d] = await deliveries(w.p, aid)
                if d.attempts:
                    break
                await asyncio.sleep(0.02)
    finally:
        for writer in held:
            writer.close()
        quiet.close()
        await quiet.wait_closed()
    assert (d.status, d.attempts, d.last_status) == (DeliveryStatus.PENDING, 1, None)
    assert "no answer within the timeout of 0.2 s" in d.last_error


async def test_the_loop_purges_deliveries_finished_longer_ago_than_the_retention(
        w: World, clock: FakeClock) -> None:
    async with webhook_receiver() as receiver:
        await hooked(w, f"{receiver.url}/hook")
        aid = await decide(w)
        await _deliver_with_loop(w.p, receiver)
    [d] = await deliveries(w.p, aid)
    assert d.status is DeliveryStatus.DELIVERED
    clock.advance(timedelta(days=3).total_seconds())
    assert await purge_finished(w.p, timedelta(days=3)) == 0  # not older than that yet
    clock.advance(1)
    async with webhook_delivery(w.p, interval=0.05, loop_clock=SystemClock(),
                                retention=timedelta(days=3)):
        for _ in range(1000):
            if not await deliveries(w.p, aid):
                break
            await asyncio.sleep(0.01)
    assert await deliveries(w.p, aid) == []
