"""A scripted runner for tests: each phase's output and ending are given up front."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import attrs

from domain.automations import PhaseStatus
from domain.ports import LineSink, Mount, OutputLine, PhaseJob, PhaseOutcome, Stream
from domain.resources import AutomationSpec


@attrs.frozen
class Script:
    """What a phase prints and how it ends; ``hang`` makes it run until stopped or timed out."""

    lines: Sequence[str] = ()
    exit_code: int = 0
    hang: bool = False


@attrs.define
class InMemoryRunner:
    scripts: Mapping[str, Script] = attrs.field(factory=dict)
    jobs: list[PhaseJob] = attrs.field(factory=list)
    stopped: list[str] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        return "memory"

    def describe(self) -> str:
        return "scripted in memory (tests only)"

    async def prepare(self, spec: AutomationSpec, mounts: Sequence[Mount]) -> None:
        return None

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        self.jobs.append(job)
        script = self.scripts.get(job.phase.name, Script())
        for line in script.lines:
            await sink(OutputLine(Stream.STDOUT, line.format(**job.env)))
        if not script.hang:
            status = PhaseStatus.SUCCEEDED if script.exit_code == 0 else PhaseStatus.FAILED
            return PhaseOutcome(status, script.exit_code)
        try:
            await asyncio.sleep(job.phase.timeout)
        except asyncio.CancelledError:
            self.stopped.append(job.phase.name)
            raise
        self.stopped.append(job.phase.name)
        return PhaseOutcome(PhaseStatus.TIMED_OUT, None)
