"""Contract of the webhook delivery outbox, on every platform store.

Suites share a database, so every claim asks for a whole page and looks only at the rows the
test added itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from adapters.sql.engine import create_engine
from adapters.sql.repositories import SqlUnitOfWork
from domain.errors import Conflict, Invalid, NotFound
from domain.ports import UnitOfWorkFactory, WebhookDeliveryFilter
from domain.resources import PolicyWebhook, WebhookAuth
from domain.webhooks import DeliveryStatus, WebhookDelivery, after_attempt, retried
from tests.contract.builders import at, uid

PAGE = 1000
HOOK = PolicyWebhook("https://hooks.example.com/opsicle",
                     WebhookAuth("header", key="X-Api-Key", value="sealed-value"),
                     signing_secret="sealed-secret", max_attempts=3)


def delivery(approval_id: str | None = None, due: float = 0, **kw: object) -> WebhookDelivery:
    fields: dict[str, object] = {
        "id": uid("dlv"), "approval_id": approval_id or uid("apr"), "org_id": uid("org"),
        "event": "approval.approved", "hook": HOOK, "body": '{"decision":"approved"}',
        "created_at": at(0), "next_attempt_at": at(due)}
    fields.update(kw)
    return WebhookDelivery(**fields)  # type: ignore[arg-type]


async def add(uow_factory: UnitOfWorkFactory, *deliveries: WebhookDelivery) -> None:
    async with uow_factory() as uow:
        for d in deliveries:
            await uow.webhooks.add(d)
        await uow.commit()


async def claim(uow_factory: UnitOfWorkFactory, now: float, token: str,
                mine: Iterable[WebhookDelivery], lease: float = 60) -> list[WebhookDelivery]:
    ids = {d.id for d in mine}
    async with uow_factory() as uow:
        claimed = await uow.webhooks.claim(at(now), at(now + lease), token, PAGE)
        await uow.commit()
    return [d for d in claimed if d.id in ids]


async def test_add_get_and_list_of_an_approval(uow_factory: UnitOfWorkFactory) -> None:
    approval_id = uid("apr")
    first, second = delivery(approval_id), delivery(approval_id, created_at=at(1))
    await add(uow_factory, second, first, delivery())
    async with uow_factory() as uow:
        assert await uow.webhooks.get(first.id) == first
        assert await uow.webhooks.of_approval(approval_id) == [first, second]
        assert await uow.webhooks.of_approval(uid("apr")) == []
        with pytest.raises(NotFound):
            await uow.webhooks.get(uid("dlv"))
        with pytest.raises(Conflict):
            await uow.webhooks.add(first)


async def test_a_delivery_is_not_kept_unless_its_unit_commits(
        uow_factory: UnitOfWorkFactory) -> None:
    d = delivery()
    async with uow_factory() as uow:
        await uow.webhooks.add(d)
    async with uow_factory() as uow:
        with pytest.raises(NotFound):
            await uow.webhooks.get(d.id)


async def test_claim_takes_due_deliveries_oldest_first_and_leases_them(
        uow_factory: UnitOfWorkFactory) -> None:
    early, late, future = delivery(due=10), delivery(due=20), delivery(due=500)
    await add(uow_factory, late, future, early)
    token = uid("tok")
    claimed = await claim(uow_factory, 30, token, (early, late, future))
    assert [d.id for d in claimed] == [early.id, late.id]
    assert all(d.lease_token == token and d.lease_until == at(90) for d in claimed)
    async with uow_factory() as uow:
        assert (await uow.webhooks.get(early.id)).lease_token == token
    # Leased: nobody else takes them until the lease ends.
    assert await claim(uow_factory, 60, uid("tok"), (early, late)) == []
    retaken = await claim(uow_factory, 91, uid("tok"), (early, late))
    assert [d.id for d in retaken] == [early.id, late.id]


async def test_two_claims_at_once_never_share_a_delivery(
        uow_factory: UnitOfWorkFactory) -> None:
    mine = [delivery(due=i) for i in range(6)]
    await add(uow_factory, *mine)
    a, b = await asyncio.gather(claim(uow_factory, 100, "tok-a", mine),
                                claim(uow_factory, 100, "tok-b", mine))
    assert {d.id for d in a}.isdisjoint({d.id for d in b})
    assert {d.id for d in a} | {d.id for d in b} == {d.id for d in mine}


async def test_finish_stores_the_outcome_only_for_the_lease_holder(
        uow_factory: UnitOfWorkFactory) -> None:
    d = delivery()
    await add(uow_factory, d)
    [held] = await claim(uow_factory, 1, "tok-1", [d])
    retry = after_attempt(held, at(2), 503, "HTTP 503", 0.0)
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.webhooks.finish(retry, "tok-other")
    async with uow_factory() as uow:
        await uow.webhooks.finish(retry, "tok-1")
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.webhooks.get(d.id)
    assert stored == retry
    assert (stored.status, stored.attempts, stored.last_status, stored.lease_token) == (
        DeliveryStatus.PENDING, 1, 503, "")
    # Not due before its backoff ends; due after.
    assert await claim(uow_factory, 3, "tok-2", [d]) == []
    [again] = await claim(uow_factory, 60, "tok-2", [d])
    done = after_attempt(again, at(61), 200, "", 0.0)
    async with uow_factory() as uow:
        await uow.webhooks.finish(done, "tok-2")
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.webhooks.get(d.id) == done
    assert done.status is DeliveryStatus.DELIVERED and done.finished_at == at(61)
    # Finished deliveries are never claimed again; a late finish by the old holder fails.
    assert await claim(uow_factory, 10_000, "tok-3", [d]) == []
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.webhooks.finish(attrs.evolve(done, attempts=9), "tok-1")
        with pytest.raises(NotFound):
            await uow.webhooks.finish(delivery(), "tok-1")


async def test_list_filters_by_org_approval_and_status_newest_first_in_pages(
        uow_factory: UnitOfWorkFactory) -> None:
    org, approval = uid("org"), uid("apr")
    # Two share a creation time: the id breaks the tie, so paging never skips or repeats.
    mine = [delivery(approval if i % 2 else None, org_id=org, created_at=at(min(i, 3)),
                     status=DeliveryStatus.FAILED if i == 4 else DeliveryStatus.PENDING)
            for i in range(5)]
    await add(uow_factory, *mine, delivery(approval))
    newest_first = sorted(mine, key=lambda d: (d.created_at, d.id), reverse=True)
    async with uow_factory() as uow:
        seen: list[WebhookDelivery] = []
        cursor = None
        for _ in range(5):
            page = await uow.webhooks.list(WebhookDeliveryFilter(org_id=org), limit=2,
                                           cursor=cursor)
            seen.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == newest_first
        of_approval = await uow.webhooks.list(
            WebhookDeliveryFilter(org_id=org, approval_id=approval))
        assert [d.id for d in of_approval.items] == [mine[3].id, mine[1].id]
        assert of_approval.next_cursor is None
        failed = await uow.webhooks.list(
            WebhookDeliveryFilter(org_id=org, status=DeliveryStatus.FAILED))
        assert [d.id for d in failed.items] == [mine[4].id]
        with pytest.raises(Invalid):
            await uow.webhooks.list(WebhookDeliveryFilter(org_id=org), cursor="not-a-cursor")


async def test_update_stores_only_over_the_expected_status(
        uow_factory: UnitOfWorkFactory) -> None:
    d = delivery()
    await add(uow_factory, d)
    [held] = await claim(uow_factory, 1, "tok-1", [d])
    failed = after_attempt(held, at(2), 404, "HTTP 404", 0.0)
    async with uow_factory() as uow:
        await uow.webhooks.finish(failed, "tok-1")
        await uow.commit()
    again = retried(failed, at(100))
    async with uow_factory() as uow:
        with pytest.raises(Conflict):
            await uow.webhooks.update(again, expected=DeliveryStatus.DELIVERED)
        await uow.webhooks.update(again, expected=DeliveryStatus.FAILED)
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.webhooks.get(d.id) == again
        # A second retry of the same given-up delivery loses: it is pending now.
        with pytest.raises(Conflict):
            await uow.webhooks.update(again, expected=DeliveryStatus.FAILED)
        with pytest.raises(NotFound):
            await uow.webhooks.update(delivery(), expected=DeliveryStatus.FAILED)
    [due] = await claim(uow_factory, 100, "tok-2", [d])
    assert (due.attempts, due.status) == (0, DeliveryStatus.PENDING)


async def test_purge_deletes_deliveries_finished_before_a_time_in_bounded_batches(
        uow_factory: UnitOfWorkFactory) -> None:
    # Far in the past: the suites share a database, and this purges only what finished before.
    past = -10_000_000.0
    old = [delivery(status=status, finished_at=at(past + i), created_at=at(past))
           for i, status in enumerate((DeliveryStatus.DELIVERED, DeliveryStatus.FAILED,
                                       DeliveryStatus.DELIVERED))]
    recent = delivery(status=DeliveryStatus.DELIVERED, finished_at=at(past + 100),
                      created_at=at(past))
    pending = delivery(created_at=at(past), due=past)
    await add(uow_factory, *old, recent, pending)
    async with uow_factory() as uow:
        assert await uow.webhooks.purge(at(past + 50), limit=2) == 2
        # Not committed: nothing was deleted.
    async with uow_factory() as uow:
        assert await uow.webhooks.purge(at(past + 50), limit=2) == 2
        await uow.commit()
    async with uow_factory() as uow:
        assert await uow.webhooks.purge(at(past + 50), limit=2) == 1
        assert await uow.webhooks.purge(at(past + 50)) == 0
        await uow.commit()
    async with uow_factory() as uow:
        for d in old:
            with pytest.raises(NotFound):
                await uow.webhooks.get(d.id)
        assert await uow.webhooks.get(recent.id) == recent
        assert await uow.webhooks.get(pending.id) == pending
        with pytest.raises(Invalid):
            await uow.webhooks.purge(at(past), limit=0)


async def test_on_sqlite_the_purge_looks_up_old_deliveries_by_the_finished_index(
        sqlite_url: str) -> None:
    """The hourly purge reads an index range, not every delivery ever kept."""
    engine = create_engine(sqlite_url)
    sent: list[tuple[str, Any]] = []

    def seen(_conn: object, _cursor: object, statement: str, parameters: Any,
             *_: object) -> None:
        sent.append((statement, parameters))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with SqlUnitOfWork(engine) as uow:
            await uow.webhooks.purge(at(-10_000_000))
            [(lookup, parameters)] = [(s, p) for s, p in sent if s.lstrip().startswith("SELECT")]
            plan = await uow.connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {lookup}", tuple(parameters))
            details = [row[-1] for row in plan]
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", seen)
        await engine.dispose()
    assert any("USING INDEX ix_webhook_deliveries_finished" in d for d in details), details
