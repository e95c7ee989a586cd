"""Run commands: run a template on the platform, get and list runs, logs (live), cancel."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import Parameter

from domain.errors import FieldError, Invalid, Unavailable
from entrypoints.cli import local, verbs
from entrypoints.cli.client import current, run, say, show
from entrypoints.exitcodes import ExitCode
from entrypoints.output import console, error_console

if TYPE_CHECKING:
    from rich.console import Console

    from adapters.http.controller_client import ControllerClient
    from adapters.http.runs_client import RunsClient
    from adapters.http.schemas.runs import RunInfo
    from domain.automations import RunStatus

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
RunId = Annotated[str, Parameter(help="The run's id.")]
RUN_COLUMNS = ("id", "name", "status", "waiting", "templateVersion", "requestedBy", "createdAt")
PHASE_COLUMNS = ("name", "status", "exitCode", "startedAt", "finishedAt")
POLL_SECONDS = 0.5
STATUS_EVERY_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 10.0


def _runs(c: ControllerClient) -> RunsClient:
    from adapters.http.runs_client import RunsClient

    return RunsClient(c)


def exit_code(status: RunStatus) -> int:
    """How a followed run's end becomes the command's exit code, as for local runs."""
    from domain.automations import RunStatus

    for_status = {
        RunStatus.SUCCEEDED: ExitCode.OK,
        RunStatus.FAILED: ExitCode.PHASE_FAILED,
        RunStatus.TIMED_OUT: ExitCode.TIMED_OUT,
        RunStatus.CANCELLED: ExitCode.CANCELLED,
        RunStatus.REJECTED: ExitCode.NOT_APPROVED,
        RunStatus.EXPIRED: ExitCode.NOT_APPROVED,
    }
    return int(for_status.get(status, ExitCode.ERROR))


# ---------------------------------------------------------------- run template


@local.run_app.command(name="template")
def run_template(
    ref: Annotated[str, Parameter(help="The template, by name or id.")],
    /,
    *,
    org: Annotated[
        str | None,
        Parameter(name="--org", help="The organisation whose workers run it (code or id)."),
    ] = None,
    var: Annotated[
        list[str] | None,
        Parameter(name=["--var", "-v"], help="A variable as key=value; repeat for more."),
    ] = None,
    comment: Annotated[str, Parameter(help="Why you run it (kept with the run).")] = "",
    follow: Annotated[
        bool, Parameter(help="Stay and print its logs live; exit with the run's outcome.")
    ] = False,
    controller_url: ControllerUrl = None,
) -> int:
    """Run a template's default version on the platform: queued for the org's workers.

    Missing required variables are asked for on a terminal (secrets hidden); elsewhere they
    are an error. Secret values are shown as ***. With --follow the exit code follows the
    run: 0 succeeded, 3 failed, 4 timed out, 10 rejected or expired (not approved),
    130 cancelled. While it waits for approval the waiting text is shown.
    """
    from domain.automations import RunStatus
    from entrypoints.local_run import parse_vars

    if not org:
        raise Invalid(
            "a run needs an org: its workers execute it",
            errors=(FieldError("org", "pass --org CODE"),),
        )
    given: dict[str, Any] = dict(parse_vars(var or []))

    async def start(client: ControllerClient) -> RunInfo:
        await _ask_missing(client, ref, org, given)
        return await _runs(client).create(ref, org, given, comment)

    made = run(controller_url, start)
    if not follow:
        say(f"run {made.id} is {made.status.value}: {made.waiting}")
        say(f"follow it with: opsicle logs {made.id} --follow")
        _show_run(made)
        return 0
    say(f"run {made.id} of {made.name} v{made.template_version} is {made.status.value}")
    if made.status is RunStatus.PENDING_APPROVAL:
        say(made.waiting)
    status = run(controller_url, lambda c: follow_logs(_runs(c), made.id))
    if status in (RunStatus.REJECTED, RunStatus.EXPIRED, RunStatus.FAILED):
        ended = run(controller_url, lambda c: _runs(c).get(made.id))
        say(f"run {made.id} {status.value}: {ended.reason or ended.waiting}")
    return exit_code(status)


async def _ask_missing(client: ControllerClient, ref: str, org: str, given: dict[str, Any]) -> None:
    """Ask on a terminal for required variables without a value (secrets hidden)."""
    from adapters.http.templates_client import TemplatesClient
    from adapters.template_reader import read_template
    from domain.variables import missing_required

    detail = await TemplatesClient(client).get(ref, org=org)
    resource = read_template(detail.content, f"{detail.template.name} v{detail.version}")
    missing = missing_required(resource.variables, given)
    if not missing:
        return
    if not sys.stdin.isatty():
        raise Invalid(
            "required variables are missing",
            errors=tuple(
                FieldError(
                    f"variables.{v.id}", f"is required ({v.type.value}); pass --var {v.id}=VALUE"
                )
                for v in missing
            ),
        )
    from rich.prompt import Prompt

    for v in missing:
        hint = f" ({v.type.value})" if v.type.value != "string" else ""
        given[v.id] = Prompt.ask(
            f"{v.label or v.id}{hint}", password=v.secret, console=error_console()
        )


# ---------------------------------------------------------------- logs


def format_line(raw: str) -> str:
    """One log line as ``HH:MM:SS [phase] text`` (the worker writes JSON lines t, p, s, m)."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(entry, dict):
        return raw
    stamp = str(entry.get("t", ""))
    try:
        stamp = (
            datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
        )
    except ValueError:
        stamp = stamp[:8]
    phase = entry.get("p") or "-"
    return f"{stamp} [{phase}] {entry.get('m', '')}"


async def follow_logs(
    runs: RunsClient,
    run_id: str,
    offset: int = 0,
    *,
    poll_seconds: float = POLL_SECONDS,
    out: Callable[[str], None] | None = None,
    note: Console | None = None,
) -> RunStatus:
    """Print the log from ``offset`` as it grows until the run ends; return how it ended.

    A lost connection is retried with backoff and reading resumes at the last offset, so no
    line is shown twice or skipped. While nothing arrives, a status line says why it waits.
    """
    import asyncio

    write = out or _print
    note = note or error_console()
    live = note.is_terminal
    spinner = note.status("waiting for the run…") if live else None
    if spinner is not None:
        spinner.start()
    backoff = poll_seconds
    said = ""
    last_status = 0.0
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                chunk = await runs.logs(run_id, offset)
            except Unavailable as exc:
                said = _tell(
                    note, spinner, f"reconnecting (reading from byte {offset}): {exc}", said
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = poll_seconds
            if chunk.data:
                if spinner is not None:
                    spinner.stop()
                for line in chunk.data.splitlines():
                    write(format_line(line))
                if spinner is not None:
                    spinner.start()
            offset = chunk.next_offset
            if chunk.data:
                continue
            if chunk.ended:
                return chunk.status
            if loop.time() - last_status >= STATUS_EVERY_SECONDS:
                last_status = loop.time()
                try:
                    info = await runs.get(run_id)
                except Unavailable:
                    pass
                else:
                    said = _tell(note, spinner, f"{info.status.value}: {info.waiting}", said)
            await asyncio.sleep(poll_seconds)
    finally:
        if spinner is not None:
            spinner.stop()


def _print(text: str) -> None:
    console().print(text, markup=False, highlight=False)


def _tell(note: Console, spinner: Any, text: str, said: str) -> str:
    """Show why the run waits: on the spinner's line, or once per change off a terminal."""
    if spinner is not None:
        spinner.update(text)
    elif text != said:
        note.print(text, markup=False, highlight=False)
    return text


def logs(
    run_id: RunId,
    /,
    *,
    follow: Annotated[
        bool, Parameter(name=["--follow", "-f"], help="Keep printing until the run ends.")
    ] = False,
    offset: Annotated[int, Parameter(help="Start at this byte offset.")] = 0,
    controller_url: ControllerUrl = None,
) -> int:
    """Print a run's log as HH:MM:SS [phase] text. With --follow, live until the run ends; the
    exit code then follows the run: 0 succeeded, 3 failed, 4 timed out, 130 cancelled."""
    if follow:
        status = run(controller_url, lambda c: follow_logs(_runs(c), run_id, offset))
        return exit_code(status)

    async def everything(client: ControllerClient) -> None:
        runs, at = _runs(client), offset
        while True:
            chunk = await runs.logs(run_id, at)
            for line in chunk.data.splitlines():
                _print(format_line(line))
            if chunk.next_offset == at:
                return
            at = chunk.next_offset

    run(controller_url, everything)
    return 0


# ---------------------------------------------------------------- get, list, cancel


def _run_row(info: RunInfo) -> dict[str, Any]:
    from adapters.serialization import to_json

    row = dict(to_json(info))
    row["variables"] = ", ".join(f"{k}={v}" for k, v in info.variables.items())
    row["requestedBy"] = info.requested_by_email or info.requested_by
    row.pop("requestedByEmail", None)
    row.pop("phases", None)
    return row


def _show_run(info: RunInfo) -> None:
    if current()["output"] != "text":
        show(info)
        return
    row = _run_row(info)
    keep = (
        "id",
        "name",
        "status",
        "waiting",
        "templateName",
        "templateVersion",
        "orgId",
        "requestedBy",
        "comment",
        "variables",
        "reason",
        "workerId",
        "attempts",
        "createdAt",
        "startedAt",
        "finishedAt",
    )
    show({k: row.get(k) for k in keep if row.get(k) not in (None, "")})
    from adapters.serialization import to_json

    show([to_json(p) for p in info.phases], columns=PHASE_COLUMNS, title="phases")


@verbs.get.command(name="run")
def get_run(run_id: RunId, /, *, controller_url: ControllerUrl = None) -> int:
    """Show a run: its status and why it waits, phases with exit codes and timings."""
    _show_run(run(controller_url, lambda c: _runs(c).get(run_id)))
    return 0


@verbs.list_.command(name="runs")
def list_runs(
    *,
    org: Annotated[str | None, Parameter(help="Only this org's runs (code or id).")] = None,
    template: Annotated[str | None, Parameter(help="Only runs of this template.")] = None,
    status: Annotated[
        list[str] | None, Parameter(help="Only these statuses (repeat or comma-separate).")
    ] = None,
    requested_by: Annotated[
        str | None, Parameter(help="Only runs this user asked for (email or id).")
    ] = None,
    since: Annotated[datetime | None, Parameter(help="Only runs created at or after.")] = None,
    until: Annotated[datetime | None, Parameter(help="Only runs created before.")] = None,
    limit: Annotated[int, Parameter(help="At most this many.")] = 50,
    cursor: Annotated[str | None, Parameter(help="Continue after an earlier page.")] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """List runs, newest first: an org's (--org), or else the ones you asked for."""
    statuses = [s.strip() for part in status or [] for s in part.split(",") if s.strip()]
    page = run(
        controller_url,
        lambda c: _runs(c).list_runs(
            org=org,
            template=template,
            statuses=statuses,
            requested_by=requested_by,
            since=_aware(since),
            until=_aware(until),
            limit=limit,
            cursor=cursor,
        ),
    )
    if current()["output"] == "text":
        show([_run_row(i) for i in page.items], columns=RUN_COLUMNS)
        if page.next_cursor:
            say(f"more: opsicle list runs --cursor {page.next_cursor}")
    else:
        show(page)
    return 0


def _aware(at: datetime | None) -> datetime | None:
    return at.astimezone() if at is not None and at.tzinfo is None else at


def cancel(
    run_id: RunId,
    /,
    *,
    reason: Annotated[str, Parameter(help="Why (kept with the run).")] = "",
    controller_url: ControllerUrl = None,
) -> int:
    """Cancel a run: at once when queued; a running one stops at its worker's next log chunk
    or heartbeat."""
    done = run(controller_url, lambda c: _runs(c).cancel(run_id, reason))
    say(f"run {done.id} is {done.status.value}: {done.waiting}")
    if current()["output"] != "text":
        show(done)
    return 0
