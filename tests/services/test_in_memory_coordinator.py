"""The in-memory coordinator that worker tests run against: leases, fencing, logs, cancel."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from adapters.memory.clock import FakeClock, SequentialIdGenerator
from adapters.memory.coordinator import InMemoryCoordinator
from domain.automations import MAX_ATTEMPTS, PhaseResult, PhaseStatus, Run, RunStatus, new_run
from domain.errors import Conflict, IllegalTransition, Invalid
from domain.ports import Claim, CoordinatorClient
from domain.resources import AutomationSpec, Phase

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = AutomationSpec(phases=(Phase("build", "busybox", ("true",)),
                              Phase("deploy", "busybox", ("true",))))
LEASE = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def coordinator(clock: FakeClock) -> InMemoryCoordinator:
    return InMemoryCoordinator(SequentialIdGenerator("lease-"), clock, lease_seconds=LEASE)


@pytest.fixture
def port(coordinator: InMemoryCoordinator) -> CoordinatorClient:
    return coordinator


def queued_run(run_id: str = "run-1") -> Run:
    run, _ = new_run(run_id, SPEC, T0)
    return run


async def claim_one(port: CoordinatorClient) -> Claim:
    claim = await port.claim(1.0)
    assert claim is not None, "expected a run to claim"
    return claim


async def test_claim_returns_none_when_nothing_is_offered(port: CoordinatorClient) -> None:
    assert await port.claim(0.05) is None


async def test_claim_hands_out_the_run_running_under_a_lease(
        coordinator: InMemoryCoordinator, port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    assert claim.run.id == "run-1"
    assert claim.run.status is RunStatus.RUNNING
    assert claim.run.attempts == 1
    assert claim.run.worker_id == "worker-1"
    assert claim.lease_id == "lease-000001"
    assert claim.lease_seconds == LEASE
    assert coordinator.run("run-1").status is RunStatus.RUNNING
    assert await port.claim(0.01) is None  # one worker at a time


async def test_waiting_claim_wakes_when_a_run_is_offered(
        coordinator: InMemoryCoordinator, port: CoordinatorClient) -> None:
    waiting = asyncio.create_task(port.claim(5.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    coordinator.offer(queued_run())
    claim = await asyncio.wait_for(waiting, 1.0)
    assert claim is not None
    assert claim.run.id == "run-1"


async def test_fencing_tokens_increase_across_claims(coordinator: InMemoryCoordinator,
                                                     port: CoordinatorClient) -> None:
    for i in range(3):
        coordinator.offer(queued_run(f"run-{i}"))
    tokens = [(await claim_one(port)).fencing_token for _ in range(3)]
    assert tokens == sorted(set(tokens))


async def test_only_queued_runs_can_be_offered(coordinator: InMemoryCoordinator) -> None:
    run, _ = new_run("run-x", SPEC, T0, needs_approval=True)
    with pytest.raises(Invalid, match="queued"):
        coordinator.offer(run)


async def test_heartbeat_extends_the_lease(coordinator: InMemoryCoordinator,
                                           port: CoordinatorClient, clock: FakeClock) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    for _ in range(5):
        clock.advance(LEASE * 0.8)
        assert await port.heartbeat(claim) is True
    assert coordinator.heartbeats == 5


async def test_lease_not_renewed_in_time_is_lost(coordinator: InMemoryCoordinator,
                                                 port: CoordinatorClient,
                                                 clock: FakeClock) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    clock.advance(LEASE + 1)
    with pytest.raises(Conflict, match="expired"):
        await port.heartbeat(claim)


async def test_stale_fencing_token_is_refused_everywhere(coordinator: InMemoryCoordinator,
                                                         port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    old = await claim_one(port)
    coordinator.expire_lease("run-1")
    new = await claim_one(port)
    assert new.fencing_token > old.fencing_token
    assert new.run.attempts == 2
    with pytest.raises(Conflict, match="stale"):
        await port.heartbeat(old)
    with pytest.raises(Conflict, match="stale"):
        await port.send_log(old, 0, b"late output")
    with pytest.raises(Conflict, match="stale"):
        await port.report_phase(old, PhaseResult("build", PhaseStatus.SUCCEEDED, 0))
    with pytest.raises(Conflict, match="stale"):
        await port.complete(old, RunStatus.SUCCEEDED)
    # The new holder is unaffected.
    assert await port.heartbeat(new) is True
    await port.complete(new, RunStatus.SUCCEEDED)
    assert coordinator.completion("run-1") == (RunStatus.SUCCEEDED, "")
    assert coordinator.log("run-1") == b""


async def test_expired_lease_fails_the_run_when_attempts_are_used(
        coordinator: InMemoryCoordinator, port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    for _ in range(MAX_ATTEMPTS):
        await claim_one(port)
        coordinator.expire_lease("run-1")
    assert coordinator.run("run-1").status is RunStatus.FAILED
    assert await port.claim(0.01) is None


async def test_log_is_offset_addressed_and_idempotent(coordinator: InMemoryCoordinator,
                                                      port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    await port.send_log(claim, 0, b"hello ")
    await port.send_log(claim, 0, b"hello ")  # a resend after a lost reply
    await port.send_log(claim, 6, b"world\n")
    await port.send_log(claim, 6, b"world\n")
    assert coordinator.log("run-1") == b"hello world\n"


async def test_log_gap_is_refused_naming_the_expected_offset(
        coordinator: InMemoryCoordinator, port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    await port.send_log(claim, 0, b"abc")
    with pytest.raises(Conflict, match="offset 3"):
        await port.send_log(claim, 10, b"xyz")
    assert coordinator.log("run-1") == b"abc"


async def test_phase_results_are_recorded_on_the_run(coordinator: InMemoryCoordinator,
                                                     port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    running = PhaseResult("build", PhaseStatus.RUNNING, started_at=T0)
    done = PhaseResult("build", PhaseStatus.SUCCEEDED, 0, started_at=T0, finished_at=T0)
    await port.report_phase(claim, running)
    await port.report_phase(claim, done)
    assert coordinator.phase_reports("run-1") == [running, done]
    assert coordinator.run("run-1").phases[0] == done
    with pytest.raises(IllegalTransition, match="no phase 'nope'"):
        await port.report_phase(claim, PhaseResult("nope", PhaseStatus.SUCCEEDED))


async def test_complete_ends_the_run_and_the_lease(coordinator: InMemoryCoordinator,
                                                   port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    assert coordinator.completion("run-1") is None
    await port.complete(claim, RunStatus.FAILED, "phase build exited 2")
    assert coordinator.completion("run-1") == (RunStatus.FAILED, "phase build exited 2")
    assert coordinator.run("run-1").phases[1].status is PhaseStatus.SKIPPED
    await port.complete(claim, RunStatus.FAILED, "phase build exited 2")  # a retry agrees
    with pytest.raises(Conflict, match="already ended as failed"):
        await port.complete(claim, RunStatus.SUCCEEDED)
    with pytest.raises(Conflict, match="already ended"):
        await port.heartbeat(claim)
    with pytest.raises(Conflict, match="already ended"):
        await port.send_log(claim, 0, b"x")


async def test_complete_needs_a_final_status(coordinator: InMemoryCoordinator,
                                             port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    with pytest.raises(Invalid, match="final status"):
        await port.complete(claim, RunStatus.QUEUED)


async def test_cancel_is_seen_at_the_next_heartbeat(coordinator: InMemoryCoordinator,
                                                    port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    assert await port.heartbeat(claim) is True
    coordinator.cancel("run-1")
    assert await port.heartbeat(claim) is False
    await port.complete(claim, RunStatus.CANCELLED, "cancelled by a user")
    assert coordinator.completion("run-1") == (RunStatus.CANCELLED, "cancelled by a user")


async def test_cancel_is_seen_in_the_reply_to_a_log_chunk(coordinator: InMemoryCoordinator,
                                                           port: CoordinatorClient) -> None:
    coordinator.offer(queued_run())
    claim = await claim_one(port)
    assert await port.send_log(claim, 0, b"one\n") is True
    coordinator.cancel("run-1")
    assert await port.send_log(claim, 4, b"two\n") is False


async def test_cancelled_queued_run_is_never_claimed(coordinator: InMemoryCoordinator,
                                                     port: CoordinatorClient) -> None:
    coordinator.offer(queued_run("run-1"))
    coordinator.offer(queued_run("run-2"))
    coordinator.cancel("run-1")
    assert coordinator.run("run-1").status is RunStatus.CANCELLED
    claim = await claim_one(port)
    assert claim.run.id == "run-2"
    assert await port.claim(0.01) is None
