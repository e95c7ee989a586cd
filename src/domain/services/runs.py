"""Run use cases: start a template's default version, see runs and why they wait, logs, cancel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from domain.automations import Run, RunStatus, new_run, request_cancel
from domain.errors import Conflict, FieldError, Invalid, NotFound
from domain.permissions import Action, Resource
from domain.ports import Page, RunFilter, UnitOfWork
from domain.services.approvals import (
    announce_request,
    approval_of_run,
    policy_for,
    request_approval,
    waiting_text,
)
from domain.services.authorization import (
    Access,
    Hidden,
    account_id,
    authorize,
    decision_for,
    emails_of,
    unit_of_work,
    user_of,
)
from domain.services.dispatch import announce
from domain.services.platform import Caller, Platform, parse, record
from domain.services.templates import TemplateReader, hidden, resolve_template
from domain.templates import TemplateRight
from domain.variables import Redactor, resolve

MAX_LOG_PAGE = 256 * 1024
DEFAULT_LOG_PAGE = 64 * 1024
# The longest log line a page returns whole; a worker's lines are far shorter (64 KiB of
# output, at most six bytes each once escaped as JSON).
MAX_LOG_LINE = 1 << 20
MAX_RUN_PAGE = 200
# A run's comment and a cancel's reason, in characters.
MAX_COMMENT = 1000
# A worker that has not been heard from for this long no longer counts as present.
WORKER_SILENCE = timedelta(seconds=90)
# Runs ahead in the queue are counted up to this many (then "... or more"): every run created
# or looked at while queued counts them, so the bound is what a deep queue costs it.
AHEAD_COUNTED = 100


@attrs.frozen
class RunView:
    run: Run
    waiting: str
    template_name: str = ""
    # The email of the user who asked for the run ("" when no account is found).
    requester: str = ""


@attrs.frozen
class LogPage:
    """Whole lines of a run's log from ``offset``; ``next_offset`` continues after them."""

    run_id: str
    offset: int
    next_offset: int
    size: int
    data: str
    status: RunStatus

    @property
    def ended(self) -> bool:
        return self.status.terminal


async def create_run(
    p: Platform,
    caller: Caller,
    template_ref: str,
    *,
    org_ref: str | None,
    read: TemplateReader,
    variables: Mapping[str, object] | None = None,
    comment: str = "",
) -> RunView:
    """Queue a run of the template's default version in an org.

    Needs automations:create in the org and the execute right on the template (templates:execute
    for an org template). Secret values are sealed for the worker and shown as ``***``.
    """
    user_id = user_of(caller)
    if org_ref is None or not org_ref.strip():
        raise Invalid(
            "a run needs an org: its workers execute it",
            errors=(FieldError("org", "is required (--org)"),),
        )
    if len(comment) > MAX_COMMENT:
        raise Invalid(
            "the comment is too long",
            errors=(FieldError("comment", f"at most {MAX_COMMENT} characters"),),
        )
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.CREATE, Resource.AUTOMATIONS, verb="run.create"
        )
        found = await resolve_template(
            p,
            uow,
            caller,
            template_ref,
            access.org.id,
            TemplateRight.EXECUTE,
            verb="run.create",
            access=access,
        )
        template = found.template
        if template.org_id is not None and template.org_id != access.org.id:
            raise Invalid(
                f"template {template.name} belongs to another org",
                errors=(FieldError("org", "an org template runs in its own org"),),
            )
        version = await uow.templates.version(template.id, template.default_version)
        resource = await parse(read, version.content, f"{template.name} v{version.version}")
        policy = await policy_for(uow, access.org.id, resource)
        values = resolve(resource.variables, dict(variables or {}))
        redactor = Redactor.for_values(resource.variables, values)
        secret = {v.id: values[v.id] for v in resource.variables if v.secret and v.id in values}
        sealed = p.sealer.seal(json.dumps(secret).encode()) if secret else ""
        run, _ = new_run(
            p.ids.new_id(),
            resource.spec,
            now,
            name=template.name,
            org_id=access.org.id,
            template_id=template.id,
            template_version=version.version,
            requested_by=user_id,
            comment=comment.strip(),
            variables=redactor.values(resource.variables, values),
            sealed_secrets=sealed,
            needs_approval=policy is not None,
        )
        await uow.runs.add(run)
        approval = None
        if policy is not None:
            # It waits: the queue message commits with the decision that approves it.
            approval = await request_approval(p, uow, run, policy)
        else:
            # The queue message commits with the run: a committed run is always announced.
            await announce(uow, p.ids, run, now)
        waiting = await _why(p, uow, run)
        await record(
            p,
            caller,
            "run.create",
            "run",
            run.id,
            org_id=run.org_id,
            data={"template": template.id, "version": str(version.version)},
            uow=uow,
        )
        await uow.commit()
    if approval is not None:
        await announce_request(p, caller, approval, run)
    return RunView(run, waiting, template.name, caller.email)


async def _visible(
    p: Platform,
    uow: UnitOfWork,
    caller: Caller,
    run_id: str,
    action: Action,
    resource: Resource,
    verb: str,
) -> tuple[Run, Access]:
    """The run, if the caller may act on runs of its org; ``NotFound`` like a missing one."""
    missing = NotFound(f"run {run_id} not found", code="run_not_found")
    try:
        run = await uow.runs.get(run_id)
    except NotFound:
        raise missing from None
    if run.org_id is None:
        raise missing
    try:
        access = await authorize(p, uow, caller, run.org_id, action, resource, verb=verb)
    except Hidden as exc:
        raise hidden(missing.message, missing.code, exc.pending) from None
    return run, access


async def get_run(p: Platform, caller: Caller, run_id: str) -> RunView:
    async with unit_of_work(p) as uow:
        run, _ = await _visible(
            p, uow, caller, run_id, Action.VIEW, Resource.AUTOMATIONS, "run.get"
        )
        return RunView(run, await _why(p, uow, run), requester=await _requester(uow, run))


async def _requester(uow: UnitOfWork, run: Run) -> str:
    """The email of who asked for ``run``."""
    if run.requested_by is None:
        return ""
    return (await emails_of(uow, [run.requested_by])).get(run.requested_by, "")


async def _why(p: Platform, uow: UnitOfWork, run: Run) -> str:
    """Why the run is where it is, in words: what it waits for, or how it ended."""
    if run.status in (RunStatus.PENDING_APPROVAL, RunStatus.REJECTED, RunStatus.EXPIRED):
        approval = await approval_of_run(uow, run.id)
        if approval is not None:
            return waiting_text(approval)
        if run.status is RunStatus.PENDING_APPROVAL:
            return "waiting for approval"
    if run.status is RunStatus.RUNNING:
        worker = run.worker_id or "?"
        if run.worker_id:
            try:
                found = await uow.workers.get(run.worker_id)
                if found.name and found.name != found.id:
                    worker = f"{found.name} ({found.id})"
            except NotFound:
                pass
        if run.cancel_requested:
            return f"cancelling: worker {worker} stops it at its next log chunk or heartbeat"
        return f"running on worker {worker}"
    if run.status is RunStatus.QUEUED:
        ahead = await uow.runs.queued_ahead(run, AHEAD_COUNTED)
        if ahead >= AHEAD_COUNTED:
            text = f"queued with {ahead} or more runs ahead"
        else:
            text = f"queued with {ahead} run{'' if ahead == 1 else 's'} ahead"
        last = await uow.workers.last_seen(run.org_id) if run.org_id else None
        if last is None:
            return f"{text}; no worker of this org has ever been seen"
        silent = p.clock.now() - last
        if silent > WORKER_SILENCE:
            return f"{text}; no worker of this org has been seen for {_duration(silent)}"
        return text
    return run.reason or run.status.value


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


@attrs.frozen
class RunQuery:
    org: str | None = None
    template: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    requested_by: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_runs(
    p: Platform, caller: Caller, query: RunQuery, *, limit: int = 50, cursor: str | None = None
) -> Page[RunView]:
    """Runs newest first. With an org: its runs (needs automations:view). Without: the runs
    the caller asked for, in orgs where they may still see them."""
    user_id = user_of(caller)
    if not 1 <= limit <= MAX_RUN_PAGE:
        raise Invalid(
            "the limit is out of range", errors=(FieldError("limit", f"1 to {MAX_RUN_PAGE}"),)
        )
    async with unit_of_work(p) as uow:
        org_id = None
        if query.org is not None:
            access = await authorize(
                p, uow, caller, query.org, Action.VIEW, Resource.AUTOMATIONS, verb="run.list"
            )
            org_id = access.org.id
        requested_by = None
        if query.requested_by is not None:
            # Nobody by that address asked for anything: an empty list, not an error.
            ref = query.requested_by
            requested_by = await account_id(uow, ref) or f"unknown:{ref}"
        elif org_id is None:
            requested_by = user_id
        template_id = None
        if query.template is not None:
            found = await resolve_template(
                p, uow, caller, query.template, org_id, TemplateRight.VIEW, verb="run.list"
            )
            template_id = found.template.id
        flt = RunFilter(
            org_id=org_id,
            template_id=template_id,
            requested_by=requested_by,
            statuses=query.statuses,
            created_after=query.since,
            created_before=query.until,
        )
        page = await uow.runs.list(flt, limit=limit, cursor=cursor)
        visible = []
        allowed: dict[str, bool] = {}
        for run in page.items:
            if run.org_id is None:
                continue
            if run.org_id not in allowed:
                allowed[run.org_id] = await _may_view(uow, run.org_id, user_id)
            if allowed[run.org_id]:
                visible.append(run)
        emails = await emails_of(uow, (r.requested_by for r in visible if r.requested_by))
        views = [
            RunView(run, await _why(p, uow, run), requester=emails.get(run.requested_by or "", ""))
            for run in visible
        ]
        return Page(tuple(views), page.next_cursor)


async def _may_view(uow: UnitOfWork, org_id: str, user_id: str) -> bool:
    try:
        await uow.orgs.member(org_id, user_id)
    except NotFound:
        return False
    return bool(await decision_for(uow, org_id, user_id, Action.VIEW, Resource.AUTOMATIONS))


async def read_logs(
    p: Platform, caller: Caller, run_id: str, offset: int = 0, limit: int = DEFAULT_LOG_PAGE
) -> LogPage:
    """Whole JSON lines of the log from byte ``offset`` (at most ``limit`` bytes, unless a
    single line is longer); needs automation_logs:view in the run's org."""
    if offset < 0:
        raise Invalid("the offset is negative", errors=(FieldError("offset", "0 or more"),))
    if not 1 <= limit <= MAX_LOG_PAGE:
        raise Invalid(
            "the limit is out of range", errors=(FieldError("limit", f"1 to {MAX_LOG_PAGE}"),)
        )
    async with unit_of_work(p) as uow:
        run, _ = await _visible(
            p, uow, caller, run_id, Action.VIEW, Resource.AUTOMATION_LOGS, "run.logs"
        )
    # The status is read before the log: a run that had ended then has its whole log stored.
    size = await p.logs.size(run_id)
    data = await p.logs.read(run_id, offset, limit) if offset < size else b""
    cut = data.rfind(b"\n")
    while cut < 0 and len(data) >= limit and len(data) < MAX_LOG_LINE:
        # A line longer than the page (a long line of output, escaped as JSON): read on to
        # its end, so that it comes whole, as the page's only line.
        more = await p.logs.read(run_id, offset + len(data), limit)
        if not more:
            break
        data += more
        cut = data.find(b"\n")
    if cut >= 0:
        data = data[: cut + 1]
    elif not run.status.terminal and len(data) < MAX_LOG_LINE:
        data = b""  # a partial last line of a live run: wait until it is whole
    return LogPage(
        run_id=run.id,
        offset=offset,
        next_offset=offset + len(data),
        size=size,
        data=data.decode("utf-8", errors="replace"),
        status=run.status,
    )


async def cancel_run(p: Platform, caller: Caller, run_id: str, reason: str = "") -> RunView:
    """Cancel at once when not running; a running run's worker learns it from the reply to its
    next log chunk or heartbeat (or at once, when ``on_cancel_asked`` tells it)."""
    if len(reason) > MAX_COMMENT:
        raise Invalid(
            "the reason is too long",
            errors=(FieldError("reason", f"at most {MAX_COMMENT} characters"),),
        )
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        run, _ = await _visible(
            p, uow, caller, run_id, Action.UPDATE, Resource.AUTOMATIONS, "run.cancel"
        )
        why = reason.strip() or f"cancelled by {caller.email or caller.actor}"
        cancelled, _ = request_cancel(run, now, why)
        try:
            await uow.runs.update(cancelled, expected=run.status, expected_attempts=run.attempts)
        except Conflict:
            raise Conflict(
                f"run {run_id} changed meanwhile; try again", code="run_changed"
            ) from None
        waiting = await _why(p, uow, cancelled)
        requester = await _requester(uow, cancelled)
        await record(p, caller, "run.cancel", "run", run.id, org_id=run.org_id, uow=uow)
        await uow.commit()
    if cancelled.cancel_requested and p.on_cancel_asked is not None:
        p.on_cancel_asked(cancelled)
    return RunView(cancelled, waiting, requester=requester)
