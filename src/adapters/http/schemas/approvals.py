"""Wire types of the approval endpoints: requests of runs, and answering them."""

from __future__ import annotations

from datetime import datetime

import attrs

from adapters.resources_yaml import dump
from domain.approvals import ApprovalSettings, ApprovalStatus, StoredPolicy, Verdict
from domain.automations import RunStatus
from domain.ports import Page
from domain.services.approvals import ApprovalView, waiting_text


@attrs.frozen
class ApprovalAnswer:
    """Approve (with ``code`` when the policy requires one) or reject (with a reason)."""

    code: str = ""
    comment: str = ""


@attrs.frozen
class ResponseInfo:
    responder_id: str
    verdict: Verdict
    at: datetime
    channel: str
    comment: str = ""


@attrs.frozen
class ApprovalInfo:
    id: str
    run_id: str
    run_name: str
    run_status: RunStatus
    org_id: str
    requested_by: str
    status: ApprovalStatus
    waiting: str
    approvals: int
    quorum: int
    code_required: bool
    created_at: datetime
    expires_at: datetime
    responses: list[ResponseInfo]
    responders: list[str]
    decided_at: datetime | None = None
    reason: str = ""
    counted: bool = True


@attrs.frozen
class ApprovalPage:
    items: list[ApprovalInfo]
    next_cursor: str | None = None


def approval_out(view: ApprovalView) -> ApprovalInfo:
    a = view.approval
    return ApprovalInfo(
        id=a.id, run_id=a.run_id, run_name=view.run.name, run_status=view.run.status,
        org_id=a.org_id, requested_by=a.requested_by, status=a.status,
        waiting=waiting_text(a), approvals=a.approvals, quorum=a.quorum,
        code_required=a.policy.require_code, created_at=a.created_at, expires_at=a.expires_at,
        responses=[ResponseInfo(r.responder_id, r.verdict, r.at, r.channel, r.comment)
                   for r in a.responses],
        responders=list(a.responders), decided_at=a.decided_at, reason=a.reason,
        counted=view.counted,
    )


def approval_page_out(page: Page[ApprovalView]) -> ApprovalPage:
    return ApprovalPage([approval_out(v) for v in page.items], page.next_cursor)


# ------------------------------------------------------------------ org policies and settings


@attrs.frozen
class PolicySubmit:
    """An ApprovalPolicy as YAML text; ``source`` names it in error messages."""

    content: str
    source: str = "<input>"


@attrs.frozen
class PolicyInfo:
    id: str
    name: str
    org_id: str
    content: str
    created_at: datetime
    created_by: str = ""
    updated_at: datetime | None = None


def policy_out(stored: StoredPolicy) -> PolicyInfo:
    return PolicyInfo(
        id=stored.id,
        name=stored.name,
        org_id=stored.org_id,
        content=dump(stored.policy),
        created_at=stored.created_at,
        created_by=stored.created_by,
        updated_at=stored.updated_at,
    )


@attrs.frozen
class ApprovalSettingsInfo:
    """An org's rule: approval for every run, or for templates with any of ``labels``."""

    org_id: str
    required: bool
    labels: dict[str, str]
    policy_ref: str | None = None
    updated_at: datetime | None = None


@attrs.frozen
class ApprovalSettingsUpdate:
    """Only the fields given change; ``labels`` replaces the labels when given."""

    required: bool | None = None
    labels: dict[str, str] | None = None
    policy_ref: str | None = None


def settings_out(s: ApprovalSettings) -> ApprovalSettingsInfo:
    return ApprovalSettingsInfo(s.org_id, s.required, dict(s.labels), s.policy_ref, s.updated_at)
