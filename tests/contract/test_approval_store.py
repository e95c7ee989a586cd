"""Contract of the approval requests and org approval policies, on every platform store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import attrs
import pytest

from domain.approvals import (
    Approval,
    ApprovalResponse,
    ApprovalSettings,
    ApprovalStatus,
    StoredPolicy,
    Verdict,
)
from domain.errors import Conflict, NotFound
from domain.ports import ApprovalFilter, UnitOfWork, UnitOfWorkFactory
from domain.resources import (
    ApprovalPolicy,
    Approver,
    ApproverKind,
    Metadata,
    PolicySpec,
    TelegramTarget,
)
from tests.contract import builders as b
from tests.contract.builders import at, uid


@pytest.fixture
async def uow(uow_factory: UnitOfWorkFactory) -> AsyncIterator[UnitOfWork]:
    async with uow_factory() as unit:
        yield unit


POLICY = PolicySpec(
    telegram=(TelegramTarget(chat_ids=(-100123,)),),
    approvers=(Approver(ApproverKind.USER, "a@example.com"), Approver(ApproverKind.ROLE, "Ops")),
    quorum=2,
    require_code=True,
    expires_in=900,
)


def approval(org_id: str | None = None, created: float = 0, **kw: object) -> Approval:
    fields: dict[str, object] = {
        "id": uid("apr"), "run_id": uid("run"), "requested_by": "usr-1", "quorum": 2,
        "expires_at": at(created + 900), "created_at": at(created),
        "org_id": org_id or uid("org"), "policy": POLICY, "responders": ("usr-2", "usr-3"),
    }
    fields.update(kw)
    return Approval(**fields)  # type: ignore[arg-type]


async def test_approvals_add_get_by_run_and_update(uow: UnitOfWork) -> None:
    a = approval(messages={"telegram:-100123": "42"})
    await uow.approvals.add(a)
    assert await uow.approvals.get(a.id) == a
    assert await uow.approvals.of_run(a.run_id) == a
    answered = attrs.evolve(
        a,
        responses=(ApprovalResponse("usr-2", Verdict.APPROVE, at(5), comment="ok"),),
        responders=("usr-3", "usr-4"),
        grant="signed",
    )
    await uow.approvals.update(answered, expected=ApprovalStatus.PENDING)
    assert await uow.approvals.get(a.id) == answered
    with pytest.raises(NotFound):
        await uow.approvals.get(uid("apr"))
    with pytest.raises(NotFound):
        await uow.approvals.of_run(uid("run"))


async def test_one_approval_per_run(uow: UnitOfWork) -> None:
    a = approval()
    await uow.approvals.add(a)
    with pytest.raises(Conflict):
        await uow.approvals.add(approval(run_id=a.run_id))
    with pytest.raises(Conflict):
        await uow.approvals.add(approval(id=a.id))


async def test_update_with_an_expected_status_refuses_a_decided_request(
        uow: UnitOfWork) -> None:
    a = approval()
    await uow.approvals.add(a)
    decided = attrs.evolve(a, status=ApprovalStatus.REJECTED, decided_at=at(3), reason="no")
    await uow.approvals.update(decided, expected=ApprovalStatus.PENDING)
    with pytest.raises(Conflict):
        await uow.approvals.update(attrs.evolve(a, status=ApprovalStatus.APPROVED),
                                   expected=ApprovalStatus.PENDING)
    assert await uow.approvals.get(a.id) == decided
    with pytest.raises(NotFound):
        await uow.approvals.update(approval(), expected=ApprovalStatus.PENDING)


async def test_approvals_list_by_org_responder_and_status_newest_first(
        uow: UnitOfWork) -> None:
    org = uid("org")
    me = uid("usr")
    first = approval(org, 1, responders=(me,))
    second = approval(org, 2)
    third = approval(org, 3, responders=(me, "usr-9"), status=ApprovalStatus.APPROVED)
    elsewhere = approval(created=4, responders=(me,))
    for a in (first, second, third, elsewhere):
        await uow.approvals.add(a)
    page = await uow.approvals.list(ApprovalFilter(org_id=org), limit=2)
    assert [a.id for a in page.items] == [third.id, second.id]
    assert page.next_cursor is not None
    rest = await uow.approvals.list(ApprovalFilter(org_id=org), limit=2, cursor=page.next_cursor)
    assert [a.id for a in rest.items] == [first.id]
    assert rest.next_cursor is None
    mine = await uow.approvals.list(ApprovalFilter(responder_id=me))
    assert [a.id for a in mine.items] == [elsewhere.id, third.id, first.id]
    pending = await uow.approvals.list(
        ApprovalFilter(responder_id=me, org_id=org, statuses=(ApprovalStatus.PENDING,)))
    assert [a.id for a in pending.items] == [first.id]
    by_run = await uow.approvals.list(ApprovalFilter(run_id=second.run_id))
    assert [a.id for a in by_run.items] == [second.id]


async def test_due_approvals_are_pending_ones_expired_by_then_oldest_first(
        uow: UnitOfWork) -> None:
    base = 10_000_000 + int(uid("n").split("-")[-1], 16) % 1000 * 10_000
    late = approval(created=base, expires_at=at(base + 50))
    early = approval(created=base, expires_at=at(base + 20))
    later = approval(created=base, expires_at=at(base + 500))
    done = approval(created=base, expires_at=at(base + 10), status=ApprovalStatus.APPROVED)
    for a in (late, early, later, done):
        await uow.approvals.add(a)
    due = [a.id for a in await uow.approvals.due(at(base + 60), limit=1000)]
    assert early.id in due and late.id in due
    assert due.index(early.id) < due.index(late.id)
    assert later.id not in due and done.id not in due


def stored_policy(org_id: str, name: str | None = None) -> StoredPolicy:
    return StoredPolicy(
        id=uid("pol"), org_id=org_id,
        policy=ApprovalPolicy(metadata=Metadata(name=name or uid("policy")), spec=POLICY),
        created_at=at(0), created_by="usr-1",
    )


async def test_policies_add_get_by_name_update_and_delete(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    p = stored_policy(org.id, "two-of-ops")
    other = stored_policy(org.id, "b-other")
    await uow.policies.add(p)
    await uow.policies.add(other)
    assert await uow.policies.get(p.id) == p
    assert await uow.policies.by_name(org.id, "two-of-ops") == p
    with pytest.raises(NotFound):
        await uow.policies.by_name(org.id, "TWO-OF-OPS-missing")
    with pytest.raises(Conflict):
        await uow.policies.add(stored_policy(org.id, "two-of-ops"))
    assert [x.name for x in await uow.policies.of_org(org.id)] == ["b-other", "two-of-ops"]
    changed = attrs.evolve(p, policy=attrs.evolve(p.policy, spec=PolicySpec(quorum=3)),
                           updated_at=at(9))
    await uow.policies.update(changed)
    assert await uow.policies.get(p.id) == changed
    with pytest.raises(Conflict):
        await uow.policies.update(attrs.evolve(
            other, policy=attrs.evolve(other.policy, metadata=Metadata(name="two-of-ops"))))
    await uow.policies.delete(p.id)
    with pytest.raises(NotFound):
        await uow.policies.get(p.id)
    with pytest.raises(NotFound):
        await uow.policies.delete(p.id)


async def test_org_approval_settings_default_then_saved_and_replaced(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    assert await uow.policies.settings(org.id) == ApprovalSettings(org_id=org.id)
    saved = ApprovalSettings(org_id=org.id, labels={"env": "prod"}, policy_ref="two-of-ops",
                             updated_at=at(3))
    await uow.policies.save_settings(saved)
    assert await uow.policies.settings(org.id) == saved
    replaced = ApprovalSettings(org_id=org.id, required=True, updated_at=at(4))
    await uow.policies.save_settings(replaced)
    assert await uow.policies.settings(org.id) == replaced


async def test_deleting_an_org_removes_its_policies_and_settings(uow: UnitOfWork) -> None:
    org = b.org()
    await uow.orgs.add(org)
    p = stored_policy(org.id)
    await uow.policies.add(p)
    await uow.policies.save_settings(ApprovalSettings(org_id=org.id, required=True))
    await uow.orgs.delete(org.id)
    with pytest.raises(NotFound):
        await uow.policies.get(p.id)
    assert await uow.policies.settings(org.id) == ApprovalSettings(org_id=org.id)


def test_expiry_is_after_creation() -> None:
    a = approval()
    assert a.expires_at - a.created_at == timedelta(seconds=900)
