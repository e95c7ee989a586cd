"""Contract of the relay claims (one approver process posts at a time), in memory and on SQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.relay_claims import in_memory_relay_claims
from adapters.sql.relay_claims import sql_relay_claims
from domain.approvals import ApprovalStatus
from domain.ports import RelayClaims, UnitOfWorkFactory
from tests.contract.builders import at, uid
from tests.contract.test_approval_store import approval


@pytest.fixture
def claims(sql_engine: AsyncEngine | None, uow_factory: UnitOfWorkFactory) -> RelayClaims:
    if sql_engine is None:
        return in_memory_relay_claims(uow_factory)
    return sql_relay_claims(sql_engine)


async def test_one_owner_holds_a_claim_until_it_expires_then_another_takes_it_over(
    claims: RelayClaims,
) -> None:
    approval = uid("apr")
    first = await claims.claim(approval, "slack", "one", now=at(0), until=at(60))
    assert first is not None and first.owner == "one" and not first.taken_over
    assert await claims.claim(approval, "slack", "two", now=at(59), until=at(119)) is None
    renewed = await claims.claim(approval, "slack", "one", now=at(30), until=at(90))
    assert renewed is not None and renewed.until == at(90) and renewed.fence == first.fence
    assert await claims.claim(approval, "slack", "two", now=at(89), until=at(149)) is None
    taken = await claims.claim(approval, "slack", "two", now=at(90), until=at(150))
    assert taken is not None and taken.owner == "two" and taken.taken_over
    assert await claims.claim(approval, "slack", "one", now=at(100), until=at(160)) is None


async def test_claims_are_per_approval_and_channel(claims: RelayClaims) -> None:
    approval, other = uid("apr"), uid("apr")
    assert await claims.claim(approval, "slack", "one", now=at(0), until=at(60))
    assert await claims.claim(approval, "telegram", "two", now=at(0), until=at(60))
    assert await claims.claim(other, "slack", "two", now=at(0), until=at(60))


async def test_release_frees_the_claim_only_for_its_owner(claims: RelayClaims) -> None:
    approval = uid("apr")
    assert await claims.claim(approval, "slack", "one", now=at(0), until=at(60))
    await claims.release(approval, "slack", "two")  # not two's: nothing happens
    assert await claims.claim(approval, "slack", "two", now=at(1), until=at(61)) is None
    await claims.release(approval, "slack", "one")
    await claims.release(approval, "slack", "one")  # released already: no error
    again = await claims.claim(approval, "slack", "two", now=at(2), until=at(62))
    assert again is not None and again.owner == "two" and not again.taken_over


async def test_of_owners_claiming_at_once_exactly_one_wins(claims: RelayClaims) -> None:
    approval = uid("apr")
    won = await asyncio.gather(*(
        claims.claim(approval, "telegram", f"owner-{n}", now=at(0), until=at(60))
        for n in range(5)))
    assert len([c for c in won if c is not None]) == 1
    late = await asyncio.gather(*(
        claims.claim(approval, "telegram", f"late-{n}", now=at(60), until=at(120))
        for n in range(5)))
    taken = [c for c in late if c is not None]
    assert len(taken) == 1 and taken[0].taken_over


async def test_purge_deletes_long_expired_claims_of_decided_requests_in_bounded_batches(
    claims: RelayClaims, uow_factory: UnitOfWorkFactory
) -> None:
    # Far in the past: the suites share a database, and this purges only what ended before.
    past = -10_000_000.0
    decided = [approval(status=ApprovalStatus.APPROVED, decided_at=at(past)) for _ in range(2)]
    pending = approval()
    async with uow_factory() as uow:
        for a in (*decided, pending):
            await uow.approvals.add(a)
        await uow.commit()
    gone = uid("apr")  # a request the store does not have: nothing will claim it again
    for a in (*decided, pending):
        assert await claims.claim(a.id, "slack", "one", now=at(past), until=at(past + 60))
    assert await claims.claim(gone, "slack", "one", now=at(past), until=at(past + 60))
    recent = await claims.claim(decided[0].id, "telegram", "one", now=at(past),
                                until=at(past + 500))
    assert recent is not None

    assert await claims.purge(at(past + 100), limit=2) == 2
    assert await claims.purge(at(past + 100)) == 1
    assert await claims.purge(at(past + 100)) == 0
    # Purged claims are free, so the next owner is not told it took one over; the pending
    # request's and the unexpired one are kept.
    for key in (decided[0].id, decided[1].id, gone):
        taken = await claims.claim(key, "slack", "two", now=at(past + 200), until=at(1))
        assert taken is not None and not taken.taken_over
    kept = await claims.claim(pending.id, "slack", "two", now=at(past + 200), until=at(1))
    assert kept is not None and kept.taken_over
    assert await claims.claim(decided[0].id, "telegram", "two", now=at(past + 200),
                              until=at(1)) is None
