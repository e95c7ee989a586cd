"""A run on this machine: variables, runner choice, working directory, signals and output."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import attrs
import yaml
from rich.prompt import Prompt
from rich.text import Text

from adapters.system import SystemClock, UlidIdGenerator
from domain.automations import RunStatus, new_run
from domain.errors import FieldError, Invalid
from domain.ports import Mount, Runner
from domain.resources import Runnable
from domain.services.execution import (
    Execution,
    PhaseFinished,
    PhaseOutput,
    PhaseStarted,
    Progress,
    RunFinished,
    execute,
)
from domain.variables import Redactor, environment, missing_required, resolve
from entrypoints.exitcodes import ExitCode
from entrypoints.output import console, error_console
from entrypoints.runner_choice import choose_runner

EXIT_FOR_STATUS = {
    RunStatus.SUCCEEDED: ExitCode.OK,
    RunStatus.FAILED: ExitCode.PHASE_FAILED,
    RunStatus.TIMED_OUT: ExitCode.TIMED_OUT,
    RunStatus.CANCELLED: ExitCode.CANCELLED,
}


def parse_vars(pairs: list[str]) -> dict[str, str]:
    """The --var key=value pairs; a key given twice is an error, not a silent last-one-wins."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise Invalid(
                f"--var {pair!r} is not key=value",
                errors=(FieldError("--var", f"expected key=value, got '{pair}'"),),
            )
        if key.strip() in given:
            raise Invalid(
                f"--var {key.strip()} is given more than once",
                errors=(FieldError("--var", f"'{key.strip()}' is given more than once"),),
            )
        given[key.strip()] = value
    return given


@attrs.define
class LocalRun:
    resource: Runnable
    base_dir: Path
    given: Mapping[str, object]
    runner_choice: str
    docker_host: str | None
    pull: bool
    grace_seconds: float
    output: str
    keep_workdir: bool = False

    async def main(self) -> int:
        clock = SystemClock()
        values = resolve(self.resource.variables, self._ask_missing())
        redactor = Redactor.for_values(self.resource.variables, values)
        spec = self.resource.spec
        runner = await self._choose_runner()
        mounts = self._mounts()
        await runner.prepare(spec, mounts)
        workdir = Path(tempfile.mkdtemp(prefix="opsicle-run-"))
        run, _ = new_run(
            UlidIdGenerator(clock).new_id(),
            spec,
            clock.now(),
            name=self.resource.metadata.name,
            variables=redactor.values(self.resource.variables, values),
        )
        ctx = Execution(
            runner=runner,
            clock=clock,
            workdir=str(workdir),
            mounts=mounts,
            env=environment(self.resource.variables, values),
            redactor=redactor,
        )
        cancel = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, cancel)
        try:
            run = await execute(run, ctx, self._show, cancel)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if self.keep_workdir:
                error_console().print(f"working directory kept: {workdir}", markup=False)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        return int(EXIT_FOR_STATUS.get(run.status, ExitCode.ERROR))

    def _on_signal(self, cancel: asyncio.Event) -> None:
        if not cancel.is_set():
            error_console().print("cancelling: stopping the current phase…", markup=False)
        cancel.set()

    def _ask_missing(self) -> dict[str, object]:
        given = dict(self.given)
        missing = missing_required(self.resource.variables, given)
        if missing and not sys.stdin.isatty():
            raise Invalid(
                "required variables are missing",
                errors=tuple(
                    FieldError(
                        f"variables.{v.id}",
                        f"is required ({v.type.value}); pass --var {v.id}=VALUE",
                    )
                    for v in missing
                ),
            )
        for var in missing:
            label = var.label or var.id
            hint = f" ({var.type.value})" if var.type.value != "string" else ""
            given[var.id] = Prompt.ask(
                f"{label}{hint}", password=var.secret, console=error_console()
            )
        return given

    async def _choose_runner(self) -> Runner:
        note = error_console()
        return await choose_runner(
            self.runner_choice,
            self.resource.spec,
            docker_host=self.docker_host,
            pull=self.pull,
            grace_seconds=self.grace_seconds,
            note=lambda line: note.print(line, markup=False),
        )

    def _mounts(self) -> tuple[Mount, ...]:
        mounts = []
        for m in self.resource.spec.volume_mounts:
            host = Path(m.host).expanduser()
            host = host if host.is_absolute() else (self.base_dir / host)
            host.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(host=str(host.resolve()), container=m.container))
        return tuple(mounts)

    async def _show(self, event: Progress) -> None:
        if self.output != "text":
            record = _record(event)
            if self.output == "json":
                sys.stdout.write(json.dumps(record, default=str) + "\n")
            else:
                sys.stdout.write(yaml.safe_dump(record, explicit_start=True, sort_keys=False))
            sys.stdout.flush()
            return
        out = console()
        if isinstance(event, PhaseStarted):
            out.print(
                Text(
                    f"{_clock(event.at)} ▶ phase {event.index + 1}/"
                    f"{len(self.resource.spec.phases)} '{event.phase.name}' "
                    f"({event.phase.image})",
                    style="bold",
                )
            )
        elif isinstance(event, PhaseOutput):
            style = "red" if event.stream == "stderr" else ""
            out.print(
                Text(f"{_clock(event.at)} [{event.phase}] ", style="dim")
                + Text(event.text, style=style)
            )
        elif isinstance(event, PhaseFinished):
            if event.result.status == "succeeded":
                out.print(
                    Text(
                        f"{_clock(event.result.finished_at)} ✔ phase "
                        f"'{event.result.name}' succeeded",
                        style="green",
                    )
                )
            else:
                out.print(
                    Text(f"{_clock(event.result.finished_at)} ✘ {event.detail}", style="bold red")
                )
        elif isinstance(event, RunFinished):
            run = event.run
            took = (
                (run.finished_at - run.started_at).total_seconds()
                if run.finished_at and run.started_at
                else 0.0
            )
            style = "bold green" if run.status is RunStatus.SUCCEEDED else "bold red"
            out.print(Text(f"run {run.status.value} in {took:.1f} s", style=style))


def _clock(at: object) -> str:
    return at.strftime("%H:%M:%S") if hasattr(at, "strftime") else ""


def _record(event: Progress) -> dict[str, object]:
    if isinstance(event, PhaseStarted):
        return {
            "event": "phase_started",
            "at": event.at.isoformat(),
            "index": event.index,
            "phase": event.phase.name,
            "image": event.phase.image,
        }
    if isinstance(event, PhaseOutput):
        return {
            "event": "output",
            "at": event.at.isoformat(),
            "phase": event.phase,
            "stream": event.stream.value,
            "text": event.text,
        }
    if isinstance(event, PhaseFinished):
        r = event.result
        return {
            "event": "phase_finished",
            "phase": r.name,
            "status": r.status.value,
            "exitCode": r.exit_code,
            "detail": event.detail,
            "at": r.finished_at.isoformat() if r.finished_at else None,
        }
    run = event.run
    return {
        "event": "run_finished",
        "id": run.id,
        "name": run.name,
        "status": run.status.value,
        "reason": run.reason,
        "variables": dict(run.variables),
        "phases": [
            {"name": p.name, "status": p.status.value, "exitCode": p.exit_code} for p in run.phases
        ],
    }
