"""Issuing a run's signed grant when its approval completes."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from domain.approvals import Approval, Verdict
from domain.automations import Run
from domain.grants import DEFAULT_GRANT_TTL, GrantSigner, encode_signed, grant_for
from domain.ports import Sealer
from domain.services.handover import environment_of, open_secrets


def sign_grant_for(
    run: Run,
    approval: Approval,
    signer: GrantSigner,
    sealer: Sealer,
    at: datetime,
    ttl: timedelta = DEFAULT_GRANT_TTL,
) -> Run:
    """``run`` carrying the grant its approvers signed: it binds the environment exactly as
    the coordinator will hand it to the worker (secret values opened with ``sealer``).

    Raises ``Invalid`` when the run's sealed secrets cannot be opened.
    """
    env, _ = environment_of(run.variables, open_secrets(sealer, run.sealed_secrets))
    approvers = [r.responder_id for r in approval.responses if r.verdict is Verdict.APPROVE]
    grant = grant_for(
        run, env, approvers, approval_id=approval.id, key_id=signer.key_id, at=at, ttl=ttl
    )
    return attrs.evolve(run, grant=encode_signed(signer.sign(grant)))
