"""Approvals: runs under a policy wait, the right people decide, codes, quorum, expiry, audit."""

from __future__ import annotations

import textwrap

import attrs
import pyotp
import pytest

from adapters.memory.approvals import InMemoryApprovalChannel
from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from adapters.template_reader import read_policy, read_template
from domain.approvals import ApprovalStatus, Verdict
from domain.audit import Outcome
from domain.automations import RunStatus
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.permissions import Action
from domain.services import accounts, approvals, orgs, runs
from domain.services.platform import Caller, Platform
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user, unique_code
from tests.services.test_templates import org_member, submit

PASSWORD = "p@ssw0rd!!Opsicle"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def channel() -> InMemoryApprovalChannel:
    return InMemoryApprovalChannel()


@pytest.fixture
def platform(clock: FakeClock, channel: InMemoryApprovalChannel
             ) -> tuple[Platform, InMemoryMailer]:
    p, mailer = memory_platform(clock)
    return attrs.evolve(p, approval_channels=(channel,)), mailer


@pytest.fixture
def p(platform: tuple[Platform, InMemoryMailer]) -> Platform:
    return platform[0]


@pytest.fixture
def mailer(platform: tuple[Platform, InMemoryMailer]) -> InMemoryMailer:
    return platform[1]


def gated(name: str, policy: str) -> str:
    body = textwrap.indent(textwrap.dedent(policy), "      ")
    return (
        f"apiVersion: v1\ntype: AutomationTemplate\nmetadata:\n  name: {name}\n"
        f"spec:\n  approvalPolicy:\n    spec:\n{body}"
        "  template:\n    phases:\n      - name: go\n        image: busybox\n"
        "        commands: ['true']\n"
    )


class World:
    def __init__(self, p: Platform, mailer: InMemoryMailer, clock: FakeClock) -> None:
        self.p, self.mailer, self.clock = p, mailer, clock

    async def setup(self, policy: str) -> None:
        self.admin = await make_user(self.p)
        self.code = unique_code()
        await orgs.create_org(self.p, self.admin, "Acme Operations", self.code)
        self.alice = await self.member()
        self.bob = await self.member()
        self.outsider = await self.member()
        text = policy.replace("ALICE", self.alice.email).replace("BOB", self.bob.email)
        await submit(self.p, self.admin, gated("gated", text), org=self.code)

    async def member(self) -> Caller:
        return await org_member(self.p, self.mailer, self.admin, self.code, Action.VIEW,
                                automations=Action.VIEW)

    async def run(self) -> runs.RunView:
        return await runs.create_run(self.p, self.admin, "gated", org_ref=self.code,
                                     read=read_template)

    async def approval_id(self, run_id: str) -> str:
        async with self.p.uow() as uow:
            return (await uow.approvals.of_run(run_id)).id

    async def mfa(self, who: Caller) -> str:
        setup = await accounts.enrol_mfa(self.p, who, PASSWORD)
        await accounts.confirm_mfa(self.p, who, pyotp.TOTP(setup.secret).at(self.clock.now()))
        self.clock.advance(30)
        return setup.secret

    def totp(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.clock.now())

    async def events(self, verb: str) -> list[tuple[Outcome, dict[str, str]]]:
        return [(e.outcome, dict(e.data)) async for e in self.p.audit.all() if e.verb == verb]


@pytest.fixture
def w(p: Platform, mailer: InMemoryMailer, clock: FakeClock) -> World:
    return World(p, mailer, clock)


TWO = """\
approvers: [ALICE, BOB]
quorum: 2
expiresIn: 15m
"""


async def test_a_run_waits_and_two_distinct_approvals_queue_it(
        w: World, channel: InMemoryApprovalChannel) -> None:
    await w.setup(TWO)
    view = await w.run()
    assert view.run.status is RunStatus.PENDING_APPROVAL
    assert view.waiting.startswith("waiting for approval (0 of 2; expires at ")
    async with w.p.uow() as uow:
        assert await uow.outbox.pending() == []
    aid = await w.approval_id(view.run.id)
    assert [a.id for a, _ in channel.announced] == [aid]
    first = await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE, comment="ok")
    assert first.approval.approvals == 1 and first.run.status is RunStatus.PENDING_APPROVAL
    again = await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE)
    assert not again.counted and again.approval.approvals == 1
    got = await runs.get_run(w.p, w.admin, view.run.id)
    assert got.waiting.startswith("waiting for approval (1 of 2;")
    done = await approvals.respond_to(w.p, w.bob, aid, Verdict.APPROVE)
    assert done.approval.status is ApprovalStatus.APPROVED
    assert done.run.status is RunStatus.QUEUED
    async with w.p.uow() as uow:
        [message] = await uow.outbox.pending()
    assert view.run.id in message.body.decode()
    assert [a.status for a, _ in channel.concluded] == [ApprovalStatus.APPROVED]
    assert [o for o, _ in await w.events("approval.respond")] == [Outcome.SUCCESS] * 3
    assert len(await w.events("approval.request")) == 1
    [(_, decided)] = await w.events("approval.approved")
    assert decided["approvers"] == f"{w.alice.user_id},{w.bob.user_id}"
    with pytest.raises(Conflict):
        await approvals.respond_to(w.p, w.alice, aid, Verdict.REJECT)
    outcome, data = (await w.events("approval.respond"))[-1]
    assert outcome is Outcome.FAILURE and data["reason"] == "approval_decided"


async def test_the_requester_and_outsiders_cannot_answer(w: World) -> None:
    await w.setup(TWO)
    view = await w.run()
    aid = await w.approval_id(view.run.id)
    with pytest.raises(Forbidden) as own:
        await approvals.respond_to(w.p, w.admin, aid, Verdict.APPROVE)
    assert own.value.code == "approval_own_request"
    with pytest.raises(Forbidden) as other:
        await approvals.respond_to(w.p, w.outsider, aid, Verdict.APPROVE)
    assert other.value.code == "approval_not_an_approver"
    stranger = await make_user(w.p)
    with pytest.raises(NotFound):
        await approvals.respond_to(w.p, stranger, aid, Verdict.APPROVE)
    reasons = [d["reason"] for o, d in await w.events("approval.respond")]
    assert reasons == ["approval_own_request", "approval_not_an_approver", "approval_not_found"]


async def test_one_rejection_rejects_the_run(w: World, channel: InMemoryApprovalChannel) -> None:
    await w.setup(TWO)
    view = await w.run()
    aid = await w.approval_id(view.run.id)
    await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE)
    done = await approvals.respond_to(w.p, w.bob, aid, Verdict.REJECT, comment="not today")
    assert done.approval.status is ApprovalStatus.REJECTED
    assert done.run.status is RunStatus.REJECTED
    assert "not today" in done.run.reason and w.bob.email in done.run.reason
    got = await runs.get_run(w.p, w.admin, view.run.id)
    assert "rejected by" in got.waiting
    assert len(await w.events("approval.rejected")) == 1
    async with w.p.uow() as uow:
        assert await uow.outbox.pending() == []


async def test_expiry_expires_the_run(w: World, channel: InMemoryApprovalChannel) -> None:
    await w.setup(TWO)
    view = await w.run()
    assert await approvals.expire_due(w.p) == 0
    w.clock.advance(15 * 60)
    assert await approvals.expire_due(w.p) == 1
    got = await runs.get_run(w.p, w.admin, view.run.id)
    assert got.run.status is RunStatus.EXPIRED and got.waiting == "approval expired"
    assert len(await w.events("approval.expired")) == 1
    assert [a.status for a, _ in channel.concluded] == [ApprovalStatus.EXPIRED]
    aid = await w.approval_id(view.run.id)
    with pytest.raises(Conflict):
        await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE)


CODE = """\
approvers: [ALICE, BOB]
requireCode: true
"""


async def test_a_required_code_is_checked_against_the_responders_own_mfa(w: World) -> None:
    await w.setup(CODE)
    view = await w.run()
    aid = await w.approval_id(view.run.id)
    with pytest.raises(Forbidden) as no_mfa:
        await approvals.respond_to(w.p, w.bob, aid, Verdict.APPROVE, code="123456")
    assert no_mfa.value.code == "approval_mfa_not_enrolled"
    assert "opsicle create mfa" in no_mfa.value.message
    secret = await w.mfa(w.alice)
    with pytest.raises(Invalid) as missing:
        await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE)
    assert missing.value.code == "approval_code_required"
    wrong = "000000" if w.totp(secret) != "000000" else "111111"
    with pytest.raises(Invalid):
        await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE, code=wrong)
    done = await approvals.respond_to(w.p, w.alice, aid, Verdict.APPROVE, code=w.totp(secret))
    assert done.run.status is RunStatus.QUEUED
    data = [d for _, d in await w.events("approval.respond")]
    assert all("code" not in d or d.get("code") != w.totp(secret) for d in data)
    assert not any(w.totp(secret) in str(d) for d in data)


async def test_a_replayed_code_is_refused(w: World) -> None:
    await w.setup(CODE)
    secret = await w.mfa(w.alice)
    first = await w.run()
    second = await w.run()
    code = w.totp(secret)
    await approvals.respond_to(w.p, w.alice, await w.approval_id(first.run.id),
                               Verdict.APPROVE, code=code)
    with pytest.raises(Invalid):
        await approvals.respond_to(w.p, w.alice, await w.approval_id(second.run.id),
                                   Verdict.APPROVE, code=code)


async def test_org_policies_by_ref_and_org_settings_gate_runs(w: World) -> None:
    await w.setup(TWO)
    policy = textwrap.dedent(f"""\
        apiVersion: v1
        type: ApprovalPolicy
        metadata: {{name: ops}}
        spec:
          approvers: ["{w.bob.email}"]
        """)
    stored = await approvals.create_policy(w.p, w.admin, w.code, policy, read=read_policy)
    assert [x.name for x in await approvals.list_policies(w.p, w.admin, w.code)] == ["ops"]
    with pytest.raises(Forbidden):
        await approvals.create_policy(w.p, w.alice, w.code, policy, read=read_policy)
    plain = (
        "apiVersion: v1\ntype: AutomationTemplate\nmetadata:\n  name: plain\n"
        "  labels: {env: prod}\nspec:\n  template:\n    phases:\n      - name: go\n"
        "        image: busybox\n        commands: ['true']\n"
    )
    await submit(w.p, w.admin, plain, org=w.code)

    async def start() -> runs.RunView:
        return await runs.create_run(w.p, w.admin, "plain", org_ref=w.code, read=read_template)

    assert (await start()).run.status is RunStatus.QUEUED
    await approvals.update_settings(w.p, w.admin, w.code, labels={"env": "prod"},
                                    policy_ref="ops")
    view = await start()
    assert view.run.status is RunStatus.PENDING_APPROVAL
    async with w.p.uow() as uow:
        assert (await uow.approvals.of_run(view.run.id)).responders == (w.bob.user_id,)
    await approvals.update_settings(w.p, w.admin, w.code, labels={})
    assert (await start()).run.status is RunStatus.QUEUED
    await approvals.remove_policy(w.p, w.admin, w.code, stored.name)
    with pytest.raises(NotFound):
        await approvals.get_policy(w.p, w.admin, w.code, "ops")


async def test_lists_show_what_i_may_answer_and_the_orgs_requests(w: World) -> None:
    await w.setup(TWO)
    view = await w.run()
    mine = await approvals.list_approvals(w.p, w.alice)
    assert [v.run.id for v in mine.items] == [view.run.id]
    assert (await approvals.list_approvals(w.p, w.outsider)).items == ()
    org = await approvals.list_approvals(w.p, w.outsider, org_ref=w.code)
    assert [v.run.id for v in org.items] == [view.run.id]
    got = await approvals.get_approval(w.p, w.alice, mine.items[0].approval.id)
    assert got.approval.quorum == 2
