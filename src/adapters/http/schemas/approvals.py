"""Wire types of the approval endpoints: requests of runs, and answering them."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.approvals import ApprovalStatus, Verdict
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
