"""Approval requests for runs and the decisions humans make on them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

import attrs

from domain.errors import Conflict, Forbidden
from domain.resources import ApprovalPolicy, PolicySpec

IN_APP = "in-app"


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def decided(self) -> bool:
        return self is not ApprovalStatus.PENDING


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@attrs.frozen
class ApprovalResponse:
    responder_id: str
    verdict: Verdict
    at: datetime
    channel: str = IN_APP
    comment: str = ""


@attrs.frozen
class ChatClaim:
    """An approver process's lease on showing or concluding one approval on one chat channel.

    ``fence`` counts the owners the claim has had: above 1, an earlier owner stopped before
    releasing it and may have posted without recording where.
    """

    approval_id: str
    channel: str
    owner: str
    until: datetime
    fence: int = 1

    @property
    def taken_over(self) -> bool:
        return self.fence > 1


@attrs.frozen
class Approval:
    id: str
    run_id: str
    requested_by: str
    quorum: int
    expires_at: datetime
    created_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING
    responses: tuple[ApprovalResponse, ...] = ()
    decided_at: datetime | None = None
    org_id: str = ""
    # The policy as it was when the run was asked for: later edits do not change this request.
    policy: PolicySpec = attrs.field(factory=PolicySpec)
    # Opsicle user ids allowed to answer, resolved from the policy's approvers at request time.
    responders: tuple[str, ...] = ()
    # Where each channel showed the request (e.g. "telegram:<chat id>" -> message id), so it
    # can edit that message with the outcome.
    messages: Mapping[str, str] = attrs.field(factory=dict)
    # Why the request ended ("rejected by …: reason", "expired"); empty while pending.
    reason: str = ""
    # A signed grant binding the approval to what runs (set by the grant signer, if any).
    grant: str = ""

    @property
    def approvers(self) -> tuple[str, ...]:
        """Distinct users who approved, in the order they answered."""
        seen: dict[str, None] = {}
        for r in self.responses:
            if r.verdict is Verdict.APPROVE:
                seen.setdefault(r.responder_id, None)
        return tuple(seen)

    @property
    def approvals(self) -> int:
        return len(self.approvers)


@attrs.frozen
class StoredPolicy:
    """An ``ApprovalPolicy`` resource kept in an org, named for templates' ``policyRef``."""

    id: str
    org_id: str
    policy: ApprovalPolicy
    created_at: datetime
    created_by: str = ""
    updated_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.policy.metadata.name


@attrs.frozen
class ApprovalSettings:
    """An org's own rule: approval for every run, or for templates carrying any given label.

    ``policy_ref`` names the org policy applied then (when the template brings none);
    without it, the default policy: in-app, one approval by an org administrator.
    """

    org_id: str
    required: bool = False
    labels: Mapping[str, str] = attrs.field(factory=dict)
    policy_ref: str | None = None
    updated_at: datetime | None = None

    def applies_to(self, labels: Mapping[str, str]) -> bool:
        if self.required:
            return True
        return any(labels.get(k) == v for k, v in self.labels.items())


class Refusal(Forbidden):
    """A response that does not count, with the reason the audit log keeps."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code)


def check_responder(approval: Approval, responder_id: str, at: datetime) -> None:
    """Raise ``Conflict`` when the request is decided or expired, ``Refusal`` when this person
    may not answer it (the requester never may)."""
    if approval.status.decided:
        raise Conflict(
            f"approval {approval.id} is already {approval.status.value}", code="approval_decided"
        )
    if at >= approval.expires_at:
        raise Conflict(f"approval {approval.id} has expired", code="approval_expired")
    if responder_id == approval.requested_by:
        raise Refusal("the person who asked for a run cannot approve it", "approval_own_request")
    if responder_id not in approval.responders:
        raise Refusal(
            "you are not one of the approvers of this request", "approval_not_an_approver"
        )


def respond(approval: Approval, response: ApprovalResponse) -> Approval:
    """Add a response (checked with ``check_responder`` first): one rejection decides; the
    same person approving twice counts once; ``quorum`` distinct approvals decide."""
    check_responder(approval, response.responder_id, response.at)
    at = response.at
    if response.verdict is Verdict.REJECT:
        reason = "rejected" + (f": {response.comment}" if response.comment else "")
        return attrs.evolve(
            approval,
            responses=(*approval.responses, response),
            status=ApprovalStatus.REJECTED,
            decided_at=at,
            reason=reason,
        )
    if response.responder_id in approval.approvers:
        return approval
    updated = attrs.evolve(approval, responses=(*approval.responses, response))
    if updated.approvals >= updated.quorum:
        updated = attrs.evolve(
            updated,
            status=ApprovalStatus.APPROVED,
            decided_at=at,
            reason=f"approved by {updated.approvals} of {updated.quorum}",
        )
    return updated


def expire(approval: Approval, at: datetime) -> Approval:
    if approval.status.decided:
        raise Conflict(
            f"approval {approval.id} is already {approval.status.value}", code="approval_decided"
        )
    return attrs.evolve(
        approval, status=ApprovalStatus.EXPIRED, decided_at=at, reason="approval expired"
    )
