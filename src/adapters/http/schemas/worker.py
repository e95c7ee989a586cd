"""Wire types of the worker API: claims, heartbeats, phase results, completion."""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.automations import PhaseResult, PhaseStatus, RunStatus
from domain.errors import FieldError, Invalid
from domain.resources import AutomationSpec

WORKER_ID_HEADER = "x-opsicle-worker-id"
TOKEN_ID_HEADER = "x-opsicle-token-id"  # noqa: S105 - a header name
MAX_CLAIM_WAIT = 30.0


WORKER_NAME_HEADER = "x-opsicle-worker-name"
WORKER_VERSION_HEADER = "x-opsicle-worker-version"
WORKER_LABELS_HEADER = "x-opsicle-worker-labels"
# A worker's labels are for people and for routing: a few short ones.
MAX_LABELS = 32
MAX_LABEL = 256


@attrs.frozen
class ClaimRequest:
    """``wait``: seconds the coordinator may hold the request (at most 30) until a run comes;
    ``busy``: runs the worker has in progress."""

    wait: float = MAX_CLAIM_WAIT
    busy: int = 0


def format_labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2``; raises ``Invalid`` naming the first entry that is not key=value, or
    when there are more than ``MAX_LABELS`` or one is longer than ``MAX_LABEL`` characters."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise Invalid(
                f"label {part!r} is not key=value",
                errors=(FieldError("labels", f"expected k=v,k2=v2; got '{part}'"),),
            )
        if len(part) > MAX_LABEL:
            raise Invalid(
                f"label {key.strip()!r} is too long",
                errors=(FieldError("labels", f"at most {MAX_LABEL} characters per k=v"),),
            )
        labels[key.strip()] = value.strip()
    if len(labels) > MAX_LABELS:
        raise Invalid(
            "a worker has too many labels",
            errors=(FieldError("labels", f"at most {MAX_LABELS}"),),
        )
    return labels


@attrs.frozen
class ClaimedRun:
    """A run under a lease: execute ``spec`` with ``env``; mask the values of ``secretEnv``."""

    run_id: str
    name: str
    org_id: str
    created_at: datetime
    spec: AutomationSpec
    fencing_token: int
    lease_seconds: float
    heartbeat_seconds: float
    log_offset: int
    env: dict[str, str] = attrs.field(factory=dict)
    secret_env: list[str] = attrs.field(factory=list)
    # The signed approval grant (``domain.grants`` wire form) and what it names; the worker
    # checks them against what it executes. Empty for runs that needed no approval.
    template_id: str | None = None
    template_version: int | None = None
    grant: str = ""


@attrs.frozen
class Fenced:
    fencing_token: int


@attrs.frozen
class HeartbeatRequest:
    fencing_token: int
    busy: int = 1


@attrs.frozen
class HeartbeatReply:
    cancel: bool
    lease_seconds: float


@attrs.frozen
class LogReply:
    size: int
    # The run's cancel was asked for: as a heartbeat's reply says (absent: False).
    cancel: bool = False


@attrs.frozen
class PhaseReport:
    fencing_token: int
    name: str
    status: PhaseStatus
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def result(self) -> PhaseResult:
        return PhaseResult(
            self.name, self.status, self.exit_code, self.started_at, self.finished_at
        )


@attrs.frozen
class Completion:
    """``phases``: results the worker had not reported yet, recorded before the run ends."""

    fencing_token: int
    status: RunStatus
    reason: str = ""
    phases: tuple[PhaseResult, ...] = ()


@attrs.frozen
class RunState:
    run_id: str
    status: RunStatus
    reason: str = ""
