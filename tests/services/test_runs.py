"""Runs: started from a template's default version, visible to their org, logs by offset, cancel."""

from __future__ import annotations

import json

import attrs
import pytest

from adapters.memory.clock import FakeClock
from adapters.memory.mail import InMemoryMailer
from adapters.memory.queue import InMemoryQueue
from adapters.template_reader import read_template
from domain.automations import Run, RunStatus
from domain.errors import Forbidden, IllegalTransition, Invalid, NotFound
from domain.permissions import Action
from domain.ports import Queue
from domain.services import dispatch, orgs, runs, templates
from domain.services.dispatch import Dispatch, WorkerIdentity
from domain.services.platform import Caller, Platform
from domain.templates import TemplateRight
from domain.variables import MASK
from entrypoints.bootstrap import memory_platform
from tests.services.org_support import make_user, unique_code
from tests.services.template_support import simple_text, template_code, template_text
from tests.services.test_templates import org_member, shared_with, submit


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def platform(clock: FakeClock) -> tuple[Platform, InMemoryMailer]:
    return memory_platform(clock)


@pytest.fixture
def p(platform: tuple[Platform, InMemoryMailer]) -> Platform:
    return platform[0]


@pytest.fixture
def mailer(platform: tuple[Platform, InMemoryMailer]) -> InMemoryMailer:
    return platform[1]


@pytest.fixture
def d(p: Platform) -> Dispatch:
    """The coordinator's use cases on the same store, standing in for a worker."""
    queues: dict[str, Queue] = {}

    def queue(topic: str) -> Queue:
        return queues.setdefault(topic, InMemoryQueue(ack_wait_seconds=60))

    return Dispatch(p.uow, p.clock, p.ids, queue, p.logs, lease_seconds=30)


async def admin_org(p: Platform) -> tuple[Caller, str]:
    admin = await make_user(p)
    code = unique_code()
    await orgs.create_org(p, admin, "Acme Operations", code)
    return admin, code


async def start(
    p: Platform, caller: Caller, name: str, org: str | None, **variables: object
) -> runs.RunView:
    return await runs.create_run(
        p, caller, name, org_ref=org, read=read_template, variables=variables, comment="because"
    )


async def test_a_run_snapshots_the_default_version_and_hides_secrets(p: Platform) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, template_text("deploy", echo="one"), org=code)
    await submit(p, admin, template_text("deploy", echo="two"), org=code)
    view = await start(p, admin, "deploy", code, times="3", **{"api-token": "s3cr3t-value"})
    run = view.run
    assert run.status is RunStatus.QUEUED and run.template_version == 1
    assert run.name == "deploy" and run.comment == "because"
    assert run.requested_by == admin.user_id and view.requester == admin.email
    assert (await runs.get_run(p, admin, run.id)).requester == admin.email
    [listed] = (await runs.list_runs(p, admin, runs.RunQuery(org=code))).items
    assert listed.requester == admin.email
    assert 'echo "one $WHO"' in run.spec.phases[0].commands[0]
    assert run.variables == {"times": 3, "api-token": MASK, "who": "world"}
    assert "s3cr3t" not in repr(run.variables) and "s3cr3t" not in run.sealed_secrets
    assert json.loads(p.sealer.open(run.sealed_secrets)) == {"api-token": "s3cr3t-value"}
    assert [ph.name for ph in run.phases] == ["greet", "second"]
    assert view.waiting == "queued with 0 runs ahead; no worker of this org has ever been seen"
    # The queue message was staged in the same unit of work.
    async with p.uow() as uow:
        [message] = await uow.outbox.pending()
    assert json.loads(message.body)["runId"] == run.id
    assert [e.verb async for e in p.audit.all()][-1] == "run.create"


async def test_variables_are_typed_and_required(p: Platform) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, template_text("typed"), org=code)
    with pytest.raises(Invalid) as caught:
        await start(p, admin, "typed", code, times="many", extra="x")
    fields = caught.value.field_map()
    assert set(fields) == {"variables.times", "variables.api-token", "variables.extra"}
    assert "whole number" in fields["variables.times"]


async def test_a_policy_ref_the_org_does_not_have_is_refused(p: Platform) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, template_text("gated", approval=True), org=code)
    with pytest.raises(Invalid) as caught:
        await start(p, admin, "gated", code, times=1, **{"api-token": "x"})
    assert "ops-approvers" in caught.value.field_map()["spec.approvalPolicy.policyRef"]
    async with p.uow() as uow:
        assert await uow.outbox.pending() == []


async def test_a_member_without_templates_execute_is_refused(
    p: Platform, mailer: InMemoryMailer
) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("deploy"), org=code)
    viewer = await org_member(p, mailer, admin, code, Action.VIEW, automations=Action.CREATE)
    with pytest.raises(Forbidden) as caught:
        await start(p, viewer, "deploy", code)
    assert "execute templates" in caught.value.message
    no_runs = await org_member(p, mailer, admin, code, Action.VIEW | Action.EXECUTE)
    with pytest.raises(Forbidden) as refused:
        await start(p, no_runs, "deploy", code)
    assert "create automations" in refused.value.message
    runner = await org_member(
        p, mailer, admin, code, Action.VIEW | Action.EXECUTE, automations=Action.CREATE
    )
    assert (await start(p, runner, "deploy", code)).run.status is RunStatus.QUEUED


async def test_personal_templates_run_in_an_org_of_the_caller_with_the_execute_right(
    p: Platform, mailer: InMemoryMailer
) -> None:
    owner, code = await admin_org(p)
    await submit(p, owner, simple_text("mine"))
    with pytest.raises(Invalid) as no_org:
        await start(p, owner, "mine", None)
    assert "org" in no_org.value.field_map()
    view = await start(p, owner, "mine", code)
    assert view.run.org_id is not None and view.run.template_version == 1
    # A viewer of the template who is an admin of their own org still cannot run it.
    viewer = await shared_with(p, mailer, owner, "mine", TemplateRight.VIEW)
    their_code = unique_code()
    await orgs.create_org(p, viewer, "Viewer Operations", their_code)
    with pytest.raises(Forbidden):
        await start(p, viewer, "mine", their_code)
    executor = await make_user(p)
    await templates.invite_user(
        p, owner, "mine", executor.email, TemplateRight.VIEW | TemplateRight.EXECUTE
    )
    await templates.accept_invitation(p, executor, template_code(mailer, executor.email))
    with pytest.raises(NotFound):  # not a member of the owner's org
        await start(p, executor, "mine", code)


async def test_runs_of_another_org_are_not_found(p: Platform) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("deploy"), org=code)
    run = (await start(p, admin, "deploy", code)).run
    stranger, their_code = await admin_org(p)
    with pytest.raises(NotFound):
        await runs.get_run(p, stranger, run.id)
    with pytest.raises(NotFound):
        await runs.read_logs(p, stranger, run.id)
    with pytest.raises(NotFound):
        await runs.cancel_run(p, stranger, run.id)
    with pytest.raises(Invalid) as long_reason:
        await runs.cancel_run(p, admin, run.id, "x" * (runs.MAX_COMMENT + 1))
    assert long_reason.value.errors[0].field == "reason"
    with pytest.raises(NotFound):
        await runs.list_runs(p, stranger, runs.RunQuery(org=code))
    assert (await runs.list_runs(p, stranger, runs.RunQuery(org=their_code))).items == ()
    assert (await runs.list_runs(p, stranger, runs.RunQuery())).items == ()
    with pytest.raises(NotFound):
        await runs.get_run(p, admin, "no-such-run")


async def test_listing_filters_and_pages(p: Platform, clock: FakeClock) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("a"), org=code)
    await submit(p, admin, simple_text("b"), org=code)
    made = []
    for name in ("a", "b", "a", "a"):
        made.append((await start(p, admin, name, code)).run)
        clock.advance(1)
    await runs.cancel_run(p, admin, made[0].id)
    q = runs.RunQuery(org=code)
    first = await runs.list_runs(p, admin, q, limit=3)
    assert [v.run.id for v in first.items] == [r.id for r in reversed(made)][:3]
    assert first.next_cursor is not None
    rest = await runs.list_runs(p, admin, q, limit=3, cursor=first.next_cursor)
    assert [v.run.id for v in rest.items] == [made[0].id] and rest.next_cursor is None
    only_a = await runs.list_runs(p, admin, runs.RunQuery(org=code, template="a"))
    assert len(only_a.items) == 3
    cancelled = await runs.list_runs(
        p, admin, runs.RunQuery(org=code, statuses=(RunStatus.CANCELLED,))
    )
    assert [v.run.id for v in cancelled.items] == [made[0].id]
    window = await runs.list_runs(
        p, admin, runs.RunQuery(org=code, since=made[1].created_at, until=made[3].created_at)
    )
    assert [v.run.id for v in window.items] == [made[2].id, made[1].id]
    by_me = await runs.list_runs(p, admin, runs.RunQuery(requested_by=admin.email))
    assert len(by_me.items) == 4
    queued = [v for v in (await runs.list_runs(p, admin, q)).items if v.run.id == made[3].id]
    assert queued[0].waiting.startswith("queued with 2 runs ahead")
    with pytest.raises(Invalid):
        await runs.list_runs(p, admin, q, limit=0)


async def test_status_says_why_a_run_waits(
    p: Platform, d: Dispatch, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("deploy"), org=code)
    first = (await start(p, admin, "deploy", code)).run
    clock.advance(1)
    second = (await start(p, admin, "deploy", code)).run
    assert (await runs.get_run(p, admin, second.id)).waiting == (
        "queued with 1 run ahead; no worker of this org has ever been seen"
    )
    assert first.org_id is not None
    worker = WorkerIdentity(first.org_id, "w-1", name="edge-1")
    await dispatch.relay_outbox(d)
    lease = await dispatch.claim_next(d, worker, 1)
    assert lease is not None and lease.run.id == first.id
    assert (await runs.get_run(p, admin, first.id)).waiting == "running on worker edge-1 (w-1)"
    assert (await runs.get_run(p, admin, second.id)).waiting == "queued with 0 runs ahead"
    clock.advance(300)
    assert (await runs.get_run(p, admin, second.id)).waiting == (
        "queued with 0 runs ahead; no worker of this org has been seen for 5m 0s"
    )
    # A deep queue is counted up to a point.
    monkeypatch.setattr(runs, "AHEAD_COUNTED", 1)
    clock.advance(1)
    third = (await start(p, admin, "deploy", code)).run
    assert (await runs.get_run(p, admin, third.id)).waiting.startswith(
        "queued with 1 or more runs ahead"
    )
    # Cancelling a running run asks its worker, who learns it at the next heartbeat, or at
    # once from the hook (the standalone role's embedded worker).
    told: list[Run] = []
    hooked = attrs.evolve(p, on_cancel_asked=told.append)
    cancelling = await runs.cancel_run(hooked, admin, first.id)
    assert cancelling.run.status is RunStatus.RUNNING and cancelling.run.cancel_requested
    assert [r.id for r in told] == [first.id]
    assert cancelling.waiting.startswith("cancelling")
    assert await dispatch.heartbeat(d, worker, first.id, lease.fencing_token) is True
    done = await dispatch.complete(
        d, worker, first.id, lease.fencing_token, RunStatus.CANCELLED, "phase 'one' was cancelled"
    )
    # The run says who cancelled it, then how it stopped.
    view = await runs.get_run(p, admin, first.id)
    assert view.run.status is RunStatus.CANCELLED
    assert view.waiting == f"cancelled by {admin.email}: phase 'one' was cancelled"
    assert done.finished_at is not None
    with pytest.raises(IllegalTransition):
        await runs.cancel_run(p, admin, first.id)


async def test_a_queued_run_is_cancelled_at_once(p: Platform) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("deploy"), org=code)
    run = (await start(p, admin, "deploy", code)).run
    told: list[Run] = []
    view = await runs.cancel_run(attrs.evolve(p, on_cancel_asked=told.append), admin, run.id)
    assert view.run.status is RunStatus.CANCELLED and view.run.finished_at is not None
    assert told == []  # no worker holds it
    assert [e.verb async for e in p.audit.all()][-1] == "run.cancel"


async def test_logs_are_read_in_whole_lines_from_an_offset(p: Platform, d: Dispatch) -> None:
    admin, code = await admin_org(p)
    await submit(p, admin, simple_text("deploy"), org=code)
    run = (await start(p, admin, "deploy", code)).run
    assert run.org_id is not None
    worker = WorkerIdentity(run.org_id, "w-1")
    await dispatch.relay_outbox(d)
    lease = await dispatch.claim_next(d, worker, 1)
    assert lease is not None
    lines = [
        json.dumps({"t": f"2026-01-01T00:00:0{i}Z", "p": "greet", "s": "stdout", "m": f"l{i}"})
        + "\n"
        for i in range(5)
    ]
    blob = "".join(lines).encode()
    # The worker sends the first two lines and half of the third.
    cut = len(("".join(lines[:2]) + lines[2][:10]).encode())
    await dispatch.append_log(d, worker, run.id, lease.fencing_token, 0, blob[:cut])
    page = await runs.read_logs(p, admin, run.id)
    assert page.data == "".join(lines[:2]) and page.next_offset == len("".join(lines[:2]))
    assert page.status is RunStatus.RUNNING and not page.ended
    await dispatch.append_log(d, worker, run.id, lease.fencing_token, cut, blob[cut:])
    # A bounded page stops at the last whole line within the limit.
    small = await runs.read_logs(p, admin, run.id, page.next_offset, limit=len(lines[2]) + 5)
    assert small.data == lines[2]
    rest = await runs.read_logs(p, admin, run.id, small.next_offset)
    assert rest.data == "".join(lines[3:]) and rest.next_offset == len(blob)
    # A line longer than the page comes whole, as the page's only line (its characters
    # are never cut in two), and the next page starts after it.
    long = json.dumps({"t": "2026-01-01T00:00:09Z", "p": "greet", "s": "stdout",
                       "m": "é" * 40_000}, ensure_ascii=False) + "\n"  # fmt: skip
    after = lines[0]
    await dispatch.append_log(
        d, worker, run.id, lease.fencing_token, len(blob), (long + after).encode()
    )
    whole = await runs.read_logs(p, admin, run.id, len(blob), limit=1000)
    assert whole.data == long and whole.next_offset == len(blob) + len(long.encode())
    assert (await runs.read_logs(p, admin, run.id, whole.next_offset)).data == after
    blob += (long + after).encode()
    await dispatch.complete(d, worker, run.id, lease.fencing_token, RunStatus.SUCCEEDED)
    end = await runs.read_logs(p, admin, run.id, len(blob))
    assert end.data == "" and end.ended and end.status is RunStatus.SUCCEEDED
    with pytest.raises(Invalid):
        await runs.read_logs(p, admin, run.id, -1)
    with pytest.raises(Invalid):
        await runs.read_logs(p, admin, run.id, 0, limit=10**9)
