"""In process, end to end: a run under a TOTP policy waits, is approved, and the embedded
worker executes it only with a grant that verifies and matches; tampering is refused."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import attrs
import pyotp

from adapters.crypto.grants import StoredKeyRing
from adapters.memory.grant_keys import in_memory_grant_keys
from adapters.memory.queue import InMemoryQueue
from adapters.memory.repositories import InMemoryUnitOfWork
from adapters.memory.runner import InMemoryRunner, Script
from adapters.template_reader import read_template
from domain.approvals import Verdict
from domain.automations import Run, RunStatus
from domain.permissions import Action
from domain.ports import Queue
from domain.resources import AutomationSpec, Phase
from domain.services import accounts, approvals, orgs, runs
from domain.services.handover import MISSING_GRANT
from domain.services.platform import Caller, Platform
from entrypoints.bootstrap import coordination, grant_hook, memory_platform
from entrypoints.embedded_worker import InProcessCoordinatorClient, PublishSignal
from entrypoints.worker import PullWorker
from tests.services.org_support import make_user, unique_code
from tests.services.test_templates import org_member, submit

PASSWORD = "p@ssw0rd!!Opsicle"
TEMPLATE = """\
apiVersion: v1
type: AutomationTemplate
metadata:
  name: gated-deploy
spec:
  approvalPolicy:
    spec:
      approvers: [APPROVER]
      quorum: 1
      requireCode: true
      expiresIn: 15m
  template:
    phases:
      - name: deploy
        image: busybox
        commands: ['echo deploying']
"""


class SteppedClock:
    """Real time that a test can step forward (a fresh TOTP window) without waiting."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


async def _approved_run(p: Platform, clock: SteppedClock, requester: Caller, org: str,
                        approver: Caller, secret: str) -> Run:
    view = await runs.create_run(p, requester, "gated-deploy", org_ref=org, read=read_template)
    assert view.run.status is RunStatus.PENDING_APPROVAL
    async with p.uow() as uow:
        approval_id = (await uow.approvals.of_run(view.run.id)).id
    clock.advance(30)  # a TOTP code is accepted once: each approval uses a fresh window
    code = pyotp.TOTP(secret).at(clock.now())
    await approvals.respond_to(p, approver, approval_id, Verdict.APPROVE, code=code)
    async with p.uow() as uow:
        run = await uow.runs.get(view.run.id)
    assert run.status is RunStatus.QUEUED
    assert run.grant, "the approved run carries a signed grant"
    return run


async def test_an_approved_run_executes_with_its_grant_and_tampered_runs_are_refused() -> None:
    clock = SteppedClock()
    p, mailer = memory_platform(clock)
    keys = StoredKeyRing(in_memory_grant_keys(), p.sealer)
    ring = await keys.ring(clock.now())
    p = attrs.evolve(p, on_approved=grant_hook(keys, p.sealer, clock))

    admin = await make_user(p)
    org = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", org)
    approver = await org_member(p, mailer, admin, org, Action.VIEW, automations=Action.VIEW)
    setup = await accounts.enrol_mfa(p, approver, PASSWORD)
    await accounts.confirm_mfa(p, approver, pyotp.TOTP(setup.secret).at(clock.now()))
    await submit(p, admin, TEMPLATE.replace("APPROVER", approver.email), org=org)

    good = await _approved_run(p, clock, admin, org, approver, setup.secret)
    altered = await _approved_run(p, clock, admin, org, approver, setup.secret)
    stripped = await _approved_run(p, clock, admin, org, approver, setup.secret)
    async with p.uow() as uow:
        # Someone with write access to the store (not through its repositories, which never
        # change a run's spec) changes what runs after the approval...
        assert isinstance(uow, InMemoryUnitOfWork)
        evil = AutomationSpec(phases=(Phase("deploy", "busybox", ("echo pwned",)),))
        uow.state.runs[altered.id] = attrs.evolve(altered, spec=evil)
        # ...or removes the grant altogether.
        uow.state.runs[stripped.id] = attrs.evolve(stripped, grant="")
        await uow.commit()

    queues: dict[str, Queue] = {}
    signal = PublishSignal()
    runner = InMemoryRunner({"deploy": Script(lines=("deployed",))})

    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    def queue(topic: str) -> Queue:
        return queues.setdefault(topic, InMemoryQueue())

    ids = (good.id, altered.id, stripped.id)
    async with coordination(p, signal.wrap(queue), lease_seconds=5) as c:
        client = InProcessCoordinatorClient(
            c.dispatch, p.sealer, signal, name="standalone", worker_id="embedded"
        )
        worker = PullWorker(client, runner_for, clock, grants=ring.verifier())
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        for _ in range(500):
            async with p.uow() as uow:
                ended = {i: await uow.runs.get(i) for i in ids}
            if all(r.status.terminal for r in ended.values()):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 10)

    assert ended[good.id].status is RunStatus.SUCCEEDED
    assert b"deployed" in await p.logs.read(good.id)
    assert ended[altered.id].status is RunStatus.FAILED
    assert ended[altered.id].reason == "grant does not match: content hash differs"
    assert ended[stripped.id].status is RunStatus.FAILED
    assert ended[stripped.id].reason == MISSING_GRANT
    assert b"pwned" not in await p.logs.read(altered.id)


