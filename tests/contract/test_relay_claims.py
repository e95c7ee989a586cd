"""Contract of the relay claims (one approver process posts at a time), in memory and on SQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.memory.relay_claims import in_memory_relay_claims
from adapters.sql.relay_claims import sql_relay_claims
from domain.ports import RelayClaims
from tests.contract.builders import at, uid


@pytest.fixture
def claims(sql_engine: AsyncEngine | None) -> RelayClaims:
    return in_memory_relay_claims() if sql_engine is None else sql_relay_claims(sql_engine)


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
