"""Approval requests for runs and the decisions humans make on them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import attrs


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


@attrs.frozen
class ApprovalResponse:
    responder_id: str
    verdict: Verdict
    at: datetime
    channel: str = "in-app"
    comment: str = ""


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
