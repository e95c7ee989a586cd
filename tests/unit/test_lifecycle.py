"""The run lifecycle as a state machine: no illegal transition is accepted, every path ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.automations import (
    MAX_ATTEMPTS,
    TERMINAL,
    TRANSITIONS,
    PhaseResult,
    PhaseStatus,
    Run,
    RunStatus,
    can_transition,
    check_lease,
    claim,
    new_run,
    record_phase,
    transition,
)
from domain.errors import Conflict, IllegalTransition
from domain.resources import AutomationSpec, Phase

SPEC = AutomationSpec(
    phases=(Phase("one", "busybox", ("true",)), Phase("two", "busybox", ("true",)))
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.run: Run | None = None
        self.tick = 0
        self.steps = 0

    def now(self) -> datetime:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick)

    @precondition(lambda self: self.run is None)
    @rule(needs_approval=st.booleans())
    def create(self, needs_approval: bool) -> None:
        self.run, event = new_run("r1", SPEC, self.now(), needs_approval=needs_approval)
        assert event.status is self.run.status
        assert self.run.status is (
            RunStatus.PENDING_APPROVAL if needs_approval else RunStatus.QUEUED
        )

    @precondition(lambda self: self.run is not None)
    @rule(to=st.sampled_from(list(RunStatus)))
    def attempt(self, to: RunStatus) -> None:
        assert self.run is not None
        before = self.run
        legal = can_transition(before.status, to) and not (
            before.status is RunStatus.RUNNING
            and to is RunStatus.QUEUED
            and before.attempts >= MAX_ATTEMPTS
        )
        if legal:
            self.run, event = transition(before, to, self.now())
            assert (event.previous, event.status) == (before.status, to)
            self.steps += 1
        else:
            with pytest.raises(IllegalTransition):
                transition(before, to, self.now())
            assert self.run is before

    @precondition(lambda self: self.run is not None and self.run.status is RunStatus.RUNNING)
    @rule(exit_code=st.integers(0, 3))
    def phase_result(self, exit_code: int) -> None:
        assert self.run is not None
        status = PhaseStatus.SUCCEEDED if exit_code == 0 else PhaseStatus.FAILED
        self.run = record_phase(self.run, PhaseResult("one", status, exit_code))

    @invariant()
    def consistent(self) -> None:
        run = self.run
        if run is None:
            return
        assert run.attempts <= MAX_ATTEMPTS
        if run.status.terminal:
            assert run.finished_at is not None
            assert not any(
                p.status in (PhaseStatus.PENDING, PhaseStatus.RUNNING) for p in run.phases
            )
        if run.status is RunStatus.RUNNING:
            assert run.started_at is not None

    def teardown(self) -> None:
        # Every path can still reach a terminal state from where it stopped.
        run = self.run
        if run is None:
            return
        seen = set()
        frontier = [run.status]
        while frontier:
            status = frontier.pop()
            seen.add(status)
            frontier.extend(s for s in TRANSITIONS[status] if s not in seen)
        assert seen & TERMINAL


Lifecycle.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestLifecycle = Lifecycle.TestCase


def test_a_run_that_keeps_losing_its_worker_ends_failed() -> None:
    run, _ = new_run("r2", SPEC, T0)
    for _ in range(MAX_ATTEMPTS):
        run, _ = transition(run, RunStatus.RUNNING, T0)
        if run.attempts < MAX_ATTEMPTS:
            run, _ = transition(run, RunStatus.QUEUED, T0, "worker lost")
    with pytest.raises(IllegalTransition, match="attempts"):
        transition(run, RunStatus.QUEUED, T0)
    run, _ = transition(run, RunStatus.FAILED, T0, "worker lost")
    assert run.status is RunStatus.FAILED and run.reason == "worker lost"


def test_a_lost_lease_says_what_became_of_the_run() -> None:
    queued, _ = new_run("r3", SPEC, T0)
    held, _ = claim(queued, "w1", T0, 30)
    check_lease(held, "w1", 1)
    again, _ = transition(held, RunStatus.QUEUED, T0, "worker lost")
    retaken, _ = claim(again, "w2", T0, 30)
    ended, _ = transition(held, RunStatus.SUCCEEDED, T0)
    for run, worker, why in [
        (ended, "w1", "it has ended (succeeded)"),
        (again, "w1", "it is queued again"),
        (retaken, "w1", "lease 2 holds it now"),
        (held, "w2", "worker w1 holds it"),
    ]:
        with pytest.raises(Conflict) as lost:
            check_lease(run, worker, 1)
        assert lost.value.message.endswith(f"under lease 1: {why}")
        assert lost.value.code == "lease_lost"


def test_terminal_states_have_no_way_out() -> None:
    for status in TERMINAL:
        assert not TRANSITIONS[status]


def test_ending_a_run_skips_pending_phases_and_closes_the_running_one() -> None:
    run, _ = new_run("r3", SPEC, T0)
    run, _ = transition(run, RunStatus.RUNNING, T0)
    run = record_phase(run, PhaseResult("one", PhaseStatus.RUNNING, started_at=T0))
    run, _ = transition(run, RunStatus.CANCELLED, T0)
    assert [p.status for p in run.phases] == [PhaseStatus.CANCELLED, PhaseStatus.SKIPPED]


def test_phase_results_need_a_running_run_and_a_known_phase() -> None:
    run, _ = new_run("r4", SPEC, T0)
    with pytest.raises(IllegalTransition):
        record_phase(run, PhaseResult("one", PhaseStatus.SUCCEEDED, 0))
    run, _ = transition(run, RunStatus.RUNNING, T0)
    with pytest.raises(IllegalTransition, match="no phase"):
        record_phase(run, PhaseResult("three", PhaseStatus.SUCCEEDED, 0))
