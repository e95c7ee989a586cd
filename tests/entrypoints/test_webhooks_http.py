"""Webhook delivery routes through the SDK over ``httpx.ASGITransport``, on in-memory adapters."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import httpx
import pytest

from adapters.http.controller_client import ControllerClient
from adapters.http.webhook_deliveries_client import WebhookDeliveriesClient
from adapters.memory.clock import FakeClock
from adapters.memory.webhooks import InMemoryWebhookSender
from adapters.serialization import to_json
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.services.platform import Caller
from domain.services.sessions import open_session
from domain.services.webhooks import deliver_due
from domain.webhooks import DeliveryStatus
from entrypoints.bootstrap import memory_platform
from entrypoints.http.common import build_app
from entrypoints.http.controller import controller_api, controller_routes
from tests.services.test_approvals import World
from tests.services.test_webhooks import HOOK_URL, decide, hooked

Sdk = Callable[[Caller], WebhookDeliveriesClient]
SECRET_URL = HOOK_URL + "?token=query-secret-2"


@pytest.fixture
def w() -> World:
    clock = FakeClock()
    p, mailer = memory_platform(clock)
    return World(p, mailer, clock)


@pytest.fixture
async def sdk(w: World) -> AsyncIterator[Sdk]:
    """An SDK client logged in as a given caller, against the controller's routes."""
    app = build_app("controller", controller_routes(w.p), [])
    async with AsyncExitStack() as stack:
        tokens: dict[str, str] = {}

        async def token(who: Caller) -> str:
            async with w.p.uow() as uow:
                user = await uow.users.get(who.user_id or "")
            return (await open_session(w.p, user, who))[1]

        def make(who: Caller) -> WebhookDeliveriesClient:
            client = ControllerClient("http://opsicle", tokens[who.user_id or ""],
                                      transport=httpx.ASGITransport(app=app))
            stack.push_async_callback(client.aclose)
            return WebhookDeliveriesClient(client)

        await hooked(w, url=SECRET_URL, max_attempts=2)
        for who in (w.admin, w.bob):
            tokens[who.user_id or ""] = await token(who)
        yield make


async def test_list_get_and_retry_over_http_without_secrets(w: World, sdk: Sdk) -> None:
    first, second, third = await decide(w), await decide(w), await decide(w)
    sender = InMemoryWebhookSender([410, None, 200])
    assert await deliver_due(w.p, sender) == 3
    api = sdk(w.admin)
    page = await api.list_deliveries(w.code, limit=2)
    assert [d.approval_id for d in page.items] == [third, second] and page.next_cursor
    rest = await api.list_deliveries(w.code, limit=2, cursor=page.next_cursor)
    assert [d.approval_id for d in rest.items] == [first] and rest.next_cursor is None
    [failed] = (await api.list_deliveries(w.code, status="failed")).items
    [pending] = (await api.list_deliveries(w.code, approval=second)).items
    assert (failed.approval_id, failed.attempts, failed.max_attempts, failed.last_status,
            failed.last_error, failed.next_attempt_at) == (first, 1, 2, 410, "HTTP 410", None)
    assert failed.url == HOOK_URL and failed.finished_at == w.clock.now()
    assert (pending.status, pending.last_status, pending.next_attempt_at is not None) == (
        DeliveryStatus.PENDING, None, True)
    assert "connection refused" in pending.last_error
    assert await api.get(w.code, failed.id) == failed
    again = await api.retry(w.code, failed.id)
    assert (again.status, again.attempts, again.next_attempt_at) == (
        DeliveryStatus.PENDING, 0, w.clock.now())
    with pytest.raises(Conflict, match="is pending"):
        await api.retry(w.code, failed.id)
    delivered = (await api.list_deliveries(w.code, status="delivered")).items[0]
    with pytest.raises(Conflict, match="was delivered"):
        await api.retry(w.code, delivered.id)
    shown = json.dumps(to_json(await api.list_deliveries(w.code)))
    # Neither the URL's query, nor a secret, nor a sealed value (Fernet tokens start gAAAA).
    assert "query-secret-2" not in shown and "pw-secret-1" not in shown
    assert "gAAAA" not in shown and "opsicle:" not in shown


async def test_bad_queries_unknown_ids_and_missing_rights_are_refused(
        w: World, sdk: Sdk) -> None:
    aid = await decide(w)
    api = sdk(w.admin)
    [d] = (await api.list_deliveries(w.code, approval=aid)).items
    with pytest.raises(Invalid) as bad:
        await api.list_deliveries(w.code, status="lost")
    assert "expected one of: pending, delivered, failed" in str(bad.value)
    with pytest.raises(Invalid):
        await api.list_deliveries(w.code, limit=0)
    with pytest.raises(Invalid):
        await api.list_deliveries(w.code, cursor="garbage")
    with pytest.raises(NotFound):
        await api.get(w.code, "no-such-delivery")
    with pytest.raises(Forbidden):
        await sdk(w.bob).get(w.code, d.id)
    with pytest.raises(Forbidden):
        await sdk(w.bob).retry(w.code, d.id)


def test_the_webhook_delivery_routes_are_in_the_openapi_document() -> None:
    p, _ = memory_platform()
    paths = controller_api(p).openapi()["paths"]
    base = "/api/v1/orgs/{org}/webhook-deliveries"
    assert set(paths[base]) == {"get"}
    assert {q["name"] for q in paths[base]["get"]["parameters"] if q["in"] == "query"} == {
        "approval", "status", "limit", "cursor"}
    assert set(paths[base + "/{delivery}"]) == {"get"}
    assert set(paths[base + "/{delivery}/retry"]) == {"post"}
