"""Approval use cases: org policies and settings, gating runs, answering, expiry, audit."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Protocol

import attrs

from domain.approvals import (
    IN_APP,
    Approval,
    ApprovalResponse,
    ApprovalSettings,
    ApprovalStatus,
    Refusal,
    StoredPolicy,
    Verdict,
    check_responder,
    expire,
    respond,
)
from domain.audit import Outcome
from domain.automations import Run, RunStatus, transition
from domain.errors import Conflict, FieldError, Forbidden, Invalid, NotFound, OpsicleError
from domain.permissions import Action, Resource
from domain.ports import ApprovalFilter, Page, UnitOfWork
from domain.resources import (
    ApprovalPolicy,
    ApproverKind,
    AutomationTemplate,
    PolicySpec,
    masked,
)
from domain.services.accounts import _second_factor
from domain.services.authorization import (
    authorize,
    decision_for,
    unit_of_work,
    user_of,
)
from domain.services.dispatch import announce
from domain.services.platform import Caller, Platform, parse, record
from domain.services.webhooks import seal_secrets, stage_deliveries

log = logging.getLogger(__name__)

SYSTEM = "system:approvals"
MAX_APPROVAL_PAGE = 200
MAX_COMMENT = 1000
# The org default when its settings ask for approval and name no policy: one approval, in-app,
# by a member whose roles allow managing automations.
DEFAULT_POLICY = PolicySpec()


class PolicyReader(Protocol):
    """Parses text into one ApprovalPolicy; raises ``Invalid`` with located errors."""

    def __call__(self, text: str, source: str) -> ApprovalPolicy: ...


# ---------------------------------------------------------------- policies and settings


async def create_policy(
    p: Platform, caller: Caller, org_ref: str, text: str, *, read: PolicyReader,
    source: str = "<input>",
) -> StoredPolicy:
    """Store an ApprovalPolicy in the org (needs org_config:create); names are unique."""
    user_id = user_of(caller)
    policy = await parse(read, text, source)
    policy = attrs.evolve(policy, spec=seal_secrets(p.sealer, policy.spec, source=source))
    now = p.clock.now()
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.CREATE, Resource.ORG_CONFIG, verb="policy.create"
        )
        stored = StoredPolicy(
            id=p.ids.new_id(), org_id=access.org.id, policy=policy, created_at=now,
            created_by=user_id, updated_at=now,
        )
        await uow.policies.add(stored)
        await record(p, caller, "policy.create", "approval_policy", stored.id,
                     org_id=stored.org_id, data={"name": stored.name}, uow=uow)
        await uow.commit()
    return shown(stored)


def shown(stored: StoredPolicy) -> StoredPolicy:
    """The policy as callers see it: webhook secrets masked."""
    return attrs.evolve(stored, policy=attrs.evolve(stored.policy,
                                                    spec=masked(stored.policy.spec)))


async def _policy(uow: UnitOfWork, org_id: str, ref: str) -> StoredPolicy:
    try:
        return await uow.policies.by_name(org_id, ref)
    except NotFound:
        pass
    try:
        found = await uow.policies.get(ref)
    except NotFound:
        found = None
    if found is None or found.org_id != org_id:
        raise NotFound(f"approval policy {ref} not found", code="policy_not_found")
    return found


async def list_policies(p: Platform, caller: Caller, org_ref: str) -> list[StoredPolicy]:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.VIEW, Resource.ORG_CONFIG, verb="policy.list"
        )
        return [shown(s) for s in await uow.policies.of_org(access.org.id)]


async def get_policy(p: Platform, caller: Caller, org_ref: str, ref: str) -> StoredPolicy:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.VIEW, Resource.ORG_CONFIG, verb="policy.get"
        )
        return shown(await _policy(uow, access.org.id, ref))


async def update_policy(
    p: Platform, caller: Caller, org_ref: str, ref: str, text: str, *, read: PolicyReader,
    source: str = "<input>",
) -> StoredPolicy:
    """Replace a policy's content (requests already made keep the policy they were made
    under); needs org_config:update."""
    policy = await parse(read, text, source)
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.UPDATE, Resource.ORG_CONFIG, verb="policy.update"
        )
        found = await _policy(uow, access.org.id, ref)
        spec = seal_secrets(p.sealer, policy.spec, found.policy.spec, source=source)
        changed = attrs.evolve(found, policy=attrs.evolve(policy, spec=spec),
                               updated_at=p.clock.now())
        await uow.policies.update(changed)
        await record(p, caller, "policy.update", "approval_policy", changed.id,
                     org_id=changed.org_id, data={"name": changed.name}, uow=uow)
        await uow.commit()
    return shown(changed)


async def remove_policy(p: Platform, caller: Caller, org_ref: str, ref: str) -> StoredPolicy:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.DELETE, Resource.ORG_CONFIG, verb="policy.remove"
        )
        found = await _policy(uow, access.org.id, ref)
        await uow.policies.delete(found.id)
        await record(p, caller, "policy.remove", "approval_policy", found.id,
                     org_id=found.org_id, data={"name": found.name}, uow=uow)
        await uow.commit()
    return shown(found)


async def get_settings(p: Platform, caller: Caller, org_ref: str) -> ApprovalSettings:
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.VIEW, Resource.ORG_CONFIG, verb="approvals.settings"
        )
        return await uow.policies.settings(access.org.id)


async def update_settings(
    p: Platform,
    caller: Caller,
    org_ref: str,
    *,
    required: bool | None = None,
    labels: Mapping[str, str] | None = None,
    policy_ref: str | None = None,
) -> ApprovalSettings:
    """Change what the org requires approval for; ``policy_ref`` "" clears the named policy.
    Needs org_config:update."""
    async with unit_of_work(p) as uow:
        access = await authorize(
            p, uow, caller, org_ref, Action.UPDATE, Resource.ORG_CONFIG,
            verb="approvals.settings.update",
        )
        current = await uow.policies.settings(access.org.id)
        if policy_ref:
            await _policy(uow, access.org.id, policy_ref)
        settings = ApprovalSettings(
            org_id=access.org.id,
            required=current.required if required is None else required,
            labels=current.labels if labels is None else dict(labels),
            policy_ref=current.policy_ref if policy_ref is None else (policy_ref or None),
            updated_at=p.clock.now(),
        )
        await uow.policies.save_settings(settings)
        shown = ",".join(f"{k}={v}" for k, v in sorted(settings.labels.items()))
        await record(p, caller, "approvals.settings.update", "org", access.org.id,
                     org_id=access.org.id,
                     data={"required": str(settings.required), "labels": shown,
                           "policy": settings.policy_ref or ""}, uow=uow)
        await uow.commit()
    return settings


# ---------------------------------------------------------------- gating runs


async def policy_for(
    uow: UnitOfWork, org_id: str, template: AutomationTemplate
) -> PolicySpec | None:
    """The policy a run of ``template`` in the org waits under, or None: the template's own
    (inline, or ``policyRef`` to an org policy), else the org's settings when they apply."""
    choice = template.approval_policy
    if choice is not None and choice.spec is not None:
        return choice.spec
    if choice is not None and choice.policy_ref is not None:
        try:
            return (await uow.policies.by_name(org_id, choice.policy_ref)).policy.spec
        except NotFound:
            raise Invalid(
                f"the template asks for approval policy {choice.policy_ref}, which this org "
                "does not have",
                errors=(FieldError("spec.approvalPolicy.policyRef",
                                   f"no approval policy named {choice.policy_ref} in the org "
                                   "(opsicle create approval-policy)"),),
                code="policy_not_found",
            ) from None
    settings = await uow.policies.settings(org_id)
    if not settings.applies_to(template.metadata.labels):
        return None
    if settings.policy_ref:
        try:
            return (await uow.policies.by_name(org_id, settings.policy_ref)).policy.spec
        except NotFound:
            pass  # removed since: the default still asks someone
    return DEFAULT_POLICY


async def _responders(
    uow: UnitOfWork, org_id: str, policy: PolicySpec, requester: str
) -> tuple[str, ...]:
    """Org members the policy lets answer (never the requester)."""
    members = [m.user_id for m in await uow.orgs.members(org_id)]
    allowed: dict[str, None] = {}
    if not policy.approvers:
        for user_id in members:
            if await decision_for(uow, org_id, user_id, Action.MANAGE, Resource.AUTOMATIONS):
                allowed.setdefault(user_id, None)
    for approver in policy.approvers:
        if approver.kind is ApproverKind.USER:
            user_id = approver.ref
            if "@" in approver.ref:
                try:
                    user_id = (await uow.users.by_email(approver.ref)).id
                except NotFound:
                    continue
            if user_id in members:
                allowed.setdefault(user_id, None)
        else:
            for user_id in members:
                roles = await uow.roles.of_member(org_id, user_id)
                if any(r.name.lower() == approver.ref.lower() for r in roles):
                    allowed.setdefault(user_id, None)
    allowed.pop(requester, None)
    return tuple(allowed)


async def request_approval(
    p: Platform, uow: UnitOfWork, run: Run, policy: PolicySpec
) -> Approval:
    """Stage the approval request of a run created waiting for it (in the caller's unit)."""
    if run.org_id is None or run.requested_by is None:
        raise Invalid("only an org run someone asked for can wait for approval")
    chat_responders = [r for t in policy.telegram for r in t.authorized_responders]
    chat_responders += [r for t in policy.slack for r in t.authorized_responders]
    if any(r.mfa_seed for r in chat_responders):
        # The original's shared seeds are read for compatibility, never used: every
        # responder's code is checked against their own MFA enrolment.
        log.warning("approval policy %s of run %s sets mfaSeed for a responder; it is ignored "
                    "(codes are checked against each user's own MFA enrolment)",
                    policy.id or "(inline)", run.id)
    responders = await _responders(uow, run.org_id, policy, run.requested_by)
    if not responders:
        raise Invalid(
            "this run needs approval, but nobody in the org could give it",
            errors=(FieldError("spec.approvalPolicy",
                               "its approvers name no org member other than you"),),
            code="no_approvers",
        )
    approval = Approval(
        id=p.ids.new_id(),
        run_id=run.id,
        requested_by=run.requested_by,
        quorum=policy.quorum,
        expires_at=run.created_at + timedelta(seconds=policy.expires_in),
        created_at=run.created_at,
        org_id=run.org_id,
        policy=policy,
        responders=responders,
    )
    await uow.approvals.add(approval)
    return approval


async def announce_request(p: Platform, caller: Caller, approval: Approval, run: Run) -> None:
    """After the run's commit: audit the request and show it on every channel."""
    await record(
        p, caller, "approval.request", "approval", approval.id, org_id=approval.org_id,
        data={"run": run.id, "quorum": str(approval.quorum),
              "expires_at": approval.expires_at.isoformat(),
              "code_required": str(approval.policy.require_code)},
    )
    for channel in p.approval_channels:
        try:
            await channel.announce(approval, run)
        except Exception:  # a channel down must not fail the run; the request still stands
            log.exception("approval channel %s could not announce %s", channel.name, approval.id)


ANNOUNCED = "announced"
CONCLUDED = "concluded"


def channel_refs(approval: Approval, channel: str) -> dict[str, str]:
    """Where ``channel`` showed the request, from ``Approval.messages`` ("<channel>:<ref>")."""
    prefix = f"{channel}:"
    return {k.removeprefix(prefix): v for k, v in approval.messages.items()
            if k.startswith(prefix)}


def channel_state(approval: Approval, channel: str) -> str:
    """"announced", "concluded" or "" (not shown yet) for ``channel``."""
    return approval.messages.get(channel, "")


def with_channel(
    approval: Approval, channel: str, state: str, refs: Mapping[str, str] | None = None
) -> Approval:
    """``approval`` recording that ``channel`` showed it (``refs``) or concluded it."""
    messages = dict(approval.messages)
    messages[channel] = state
    messages.update({f"{channel}:{k}": v for k, v in (refs or {}).items()})
    return attrs.evolve(approval, messages=messages)


async def _conclude(p: Platform, approval: Approval, run: Run) -> None:
    for channel in p.approval_channels:
        try:
            await channel.conclude(approval, run, channel_refs(approval, channel.name))
        except Exception:
            log.exception("approval channel %s could not conclude %s", channel.name, approval.id)


def waiting_text(approval: Approval) -> str:
    """"waiting for approval (1 of 2; expires at …)" or how the request ended."""
    if approval.status is ApprovalStatus.PENDING:
        code = "; a TOTP code is required" if approval.policy.require_code else ""
        return (f"waiting for approval ({approval.approvals} of {approval.quorum}; expires at "
                f"{approval.expires_at.isoformat(timespec='seconds')}{code})")
    return approval.reason or approval.status.value


# ---------------------------------------------------------------- answering


@attrs.frozen
class ApprovalView:
    approval: Approval
    run: Run
    # Whether this response changed anything (an approver answering twice counts once).
    counted: bool = True


async def _refuse(
    p: Platform, caller: Caller, approval: Approval | None, approval_id: str, verdict: Verdict,
    channel: str, exc: OpsicleError,
) -> None:
    await record(
        p, caller, "approval.respond", "approval", approval_id,
        org_id=approval.org_id if approval else None, outcome=Outcome.FAILURE,
        data={"verdict": verdict.value, "channel": channel, "reason": exc.code or "refused",
              "message": exc.message[:300]},
    )


async def respond_to(
    p: Platform,
    caller: Caller,
    approval_id: str,
    verdict: Verdict,
    *,
    code: str = "",
    comment: str = "",
    channel: str = IN_APP,
) -> ApprovalView:
    """Approve or reject as the caller (a chat channel passes the linked Opsicle user).

    Refused, and audited with the reason: the requester, anyone not among the request's
    responders, a decided or expired request, and — when the policy requires a code — an
    approval without a valid, unused TOTP code from the responder's own MFA enrolment.
    Enough distinct approvals queue the run in the same unit of work; one rejection rejects it.
    """
    user_id = user_of(caller)
    if len(comment) > MAX_COMMENT:
        raise Invalid("the comment is too long",
                      errors=(FieldError("comment", f"at most {MAX_COMMENT} characters"),))
    now = p.clock.now()
    approval: Approval | None = None
    try:
        async with p.uow() as uow:
            approval = await _answerable(uow, approval_id, user_id)
            check_responder(approval, user_id, now)
        if verdict is Verdict.APPROVE and approval.policy.require_code:
            await _check_code(p, caller, user_id, code)
        async with p.uow() as uow:
            approval = await uow.approvals.get(approval_id)
            response = ApprovalResponse(user_id, verdict, now, channel, comment.strip())
            updated = respond(approval, response)
            counted = updated != approval
            run = await uow.runs.get(approval.run_id)
            if counted:
                updated = await _decide(p, uow, updated, run, caller)
                await uow.approvals.update(updated, expected=ApprovalStatus.PENDING)
                if updated.status is not ApprovalStatus.PENDING:
                    run = await uow.runs.get(approval.run_id)
                    # Committed with the decision: a crash after it still calls back.
                    await stage_deliveries(p, uow, updated, run)
                await uow.commit()
    except (Refusal, Conflict, Forbidden, Invalid, NotFound) as exc:
        await _refuse(p, caller, approval, approval_id, verdict, channel, exc)
        raise
    await record(
        p, caller, "approval.respond", "approval", approval_id, org_id=updated.org_id,
        data={"verdict": verdict.value, "channel": channel, "run": run.id,
              "counted": str(counted), "code_checked": str(bool(
                  verdict is Verdict.APPROVE and updated.policy.require_code))},
    )
    if counted and updated.status is not ApprovalStatus.PENDING:
        await record(
            p, caller, f"approval.{updated.status.value}", "approval", approval_id,
            org_id=updated.org_id,
            data={"run": run.id, "approvers": ",".join(updated.approvers),
                  "reason": updated.reason[:300]},
        )
        await _conclude(p, updated, run)
    return ApprovalView(updated, run, counted)


async def _answerable(uow: UnitOfWork, approval_id: str, user_id: str) -> Approval:
    """The request, if the user belongs to its org; else ``NotFound`` like a missing one."""
    missing = NotFound(f"approval {approval_id} not found", code="approval_not_found")
    try:
        approval = await uow.approvals.get(approval_id)
        await uow.orgs.member(approval.org_id, user_id)
    except NotFound:
        raise missing from None
    return approval


async def _check_code(p: Platform, caller: Caller, user_id: str, code: str) -> None:
    if not code.strip():
        raise Invalid(
            "this approval needs a TOTP code from your authenticator app (--code)",
            code="approval_code_required",
            errors=(FieldError("code", "is required by the approval policy"),),
        )
    try:
        await _second_factor(p, caller, user_id, code.strip(), allow_recovery=False)
    except NotFound:
        raise Forbidden(
            "this approval needs a TOTP code, and you have no multi-factor authentication set "
            "up: enrol first ('opsicle create mfa'), then approve with --code",
            code="approval_mfa_not_enrolled",
        ) from None


async def _decide(
    p: Platform, uow: UnitOfWork, approval: Approval, run: Run, caller: Caller
) -> Approval:
    """Move the run when the approval was decided; return the approval to store."""
    now = p.clock.now()
    if approval.status is ApprovalStatus.APPROVED:
        if p.on_approved is not None:
            approval, run = await p.on_approved(uow, approval, run)
        queued, _ = transition(run, RunStatus.QUEUED, now, approval.reason)
        await uow.runs.update(queued, expected=RunStatus.PENDING_APPROVAL)
        # The queue message commits with the decision: an approved run is always announced.
        await announce(uow, p.ids, queued, now)
    elif approval.status is ApprovalStatus.REJECTED:
        who = caller.email or caller.actor
        reason = f"rejected by {who}" + (
            f": {approval.responses[-1].comment}" if approval.responses[-1].comment else "")
        approval = attrs.evolve(approval, reason=reason)
        rejected, _ = transition(run, RunStatus.REJECTED, now, reason)
        await uow.runs.update(rejected, expected=RunStatus.PENDING_APPROVAL)
    return approval


async def expire_due(p: Platform, limit: int = 100) -> int:
    """Expire pending requests whose time is up (their runs too); return how many."""
    now = p.clock.now()
    async with p.uow() as uow:
        due = [a.id for a in await uow.approvals.due(now, limit)]
    done = 0
    for approval_id in due:
        try:
            async with p.uow() as uow:
                approval = await uow.approvals.get(approval_id)
                if approval.status is not ApprovalStatus.PENDING:
                    continue
                expired = expire(approval, now)
                await uow.approvals.update(expired, expected=ApprovalStatus.PENDING)
                run = await uow.runs.get(approval.run_id)
                if run.status is RunStatus.PENDING_APPROVAL:
                    run, _ = transition(run, RunStatus.EXPIRED, now, "approval expired")
                    await uow.runs.update(run, expected=RunStatus.PENDING_APPROVAL)
                await stage_deliveries(p, uow, expired, run)
                await uow.commit()
        except Conflict:
            continue  # answered or expired by someone else meanwhile
        done += 1
        await record(p, Caller(), "approval.expired", "approval", approval_id,
                     org_id=expired.org_id, actor=SYSTEM, data={"run": run.id})
        await _conclude(p, expired, run)
    return done


# ---------------------------------------------------------------- reading


async def _visible(uow: UnitOfWork, approval_id: str, user_id: str) -> Approval:
    """Responders, the requester and members who may view the org's runs see a request."""
    approval = await _answerable(uow, approval_id, user_id)
    if user_id in approval.responders or user_id == approval.requested_by:
        return approval
    if await decision_for(uow, approval.org_id, user_id, Action.VIEW, Resource.AUTOMATIONS):
        return approval
    raise NotFound(f"approval {approval_id} not found", code="approval_not_found")


async def get_approval(p: Platform, caller: Caller, approval_id: str) -> ApprovalView:
    user_id = user_of(caller)
    async with unit_of_work(p) as uow:
        approval = await _visible(uow, approval_id, user_id)
        return ApprovalView(approval, await uow.runs.get(approval.run_id))


async def approval_of_run(uow: UnitOfWork, run_id: str) -> Approval | None:
    try:
        return await uow.approvals.of_run(run_id)
    except NotFound:
        return None


async def list_approvals(
    p: Platform,
    caller: Caller,
    *,
    org_ref: str | None = None,
    statuses: tuple[ApprovalStatus, ...] = (ApprovalStatus.PENDING,),
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ApprovalView]:
    """With an org: its requests (needs automations:view). Without: those I may answer."""
    user_id = user_of(caller)
    if not 1 <= limit <= MAX_APPROVAL_PAGE:
        raise Invalid("the limit is out of range",
                      errors=(FieldError("limit", f"1 to {MAX_APPROVAL_PAGE}"),))
    async with unit_of_work(p) as uow:
        if org_ref is not None:
            access = await authorize(
                p, uow, caller, org_ref, Action.VIEW, Resource.AUTOMATIONS, verb="approval.list"
            )
            flt = ApprovalFilter(org_id=access.org.id, statuses=statuses)
        else:
            flt = ApprovalFilter(responder_id=user_id, statuses=statuses)
        page = await uow.approvals.list(flt, limit=limit, cursor=cursor)
        views = []
        for approval in page.items:
            if org_ref is None:
                try:
                    await uow.orgs.member(approval.org_id, user_id)
                except NotFound:
                    continue
            views.append(ApprovalView(approval, await uow.runs.get(approval.run_id)))
        return Page(tuple(views), page.next_cursor)
