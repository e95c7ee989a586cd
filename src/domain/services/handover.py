"""Handing a claimed run to a worker: its variables as environment, secret values opened."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

import attrs

from domain.automations import RunStatus
from domain.errors import Invalid
from domain.ports import Sealer
from domain.resources import VariableValue, env_name
from domain.services import dispatch
from domain.services.dispatch import Dispatch, Lease, WorkerIdentity
from domain.variables import render


def seal_secrets(sealer: Sealer, values: Mapping[str, VariableValue]) -> str:
    """What ``Run.sealed_secrets`` holds: a JSON object of variable id -> value, sealed.

    Run creation stores secret values only this way (``Run.variables`` shows them as ``***``).
    """
    if not values:
        return ""
    return sealer.seal(json.dumps(dict(values), sort_keys=True).encode())


def open_secrets(sealer: Sealer, sealed: str) -> dict[str, VariableValue]:
    """Raises ``Invalid`` when the value was sealed with another key or altered."""
    if not sealed:
        return {}
    try:
        data = json.loads(sealer.open(sealed))
    except ValueError as exc:
        raise Invalid("the run's sealed secrets are not readable") from exc
    if not isinstance(data, dict):
        raise Invalid("the run's sealed secrets are not a mapping")
    return {str(k): v for k, v in data.items() if isinstance(v, str | bool | int | float)}


@attrs.frozen
class Handover:
    """A claimed run with everything the worker needs besides the spec."""

    lease: Lease
    env: Mapping[str, str]
    secret_env: tuple[str, ...]
    log_offset: int
    heartbeat_seconds: float


def environment_of(
    variables: Mapping[str, VariableValue], secrets: Mapping[str, VariableValue]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """Phase environment from a run's shown values and its opened secrets."""
    env = {env_name(k): render(v) for k, v in variables.items() if k not in secrets}
    env.update({env_name(k): render(v) for k, v in secrets.items()})
    return env, tuple(sorted(env_name(k) for k in secrets))


def heartbeat_interval(lease_seconds: float) -> float:
    """A third of the lease: two heartbeats can be lost before the lease runs out."""
    return max(0.05, lease_seconds / 3)


MISSING_GRANT = "the run needed approval but carries no approval grant: refused to hand it out"


async def claim_for_worker(
    d: Dispatch,
    sealer: Sealer,
    worker: WorkerIdentity,
    wait_seconds: float,
    busy: int = 0,
    wanted: Callable[[], Awaitable[bool]] | None = None,
) -> Handover | None:
    """The next run of the worker's org, ready to execute, or None after ``wait_seconds``.

    A run whose secrets cannot be opened (the key changed) cannot execute anywhere, and a run
    that has an approval request but carries no signed grant (removed from the store) must not
    execute: either fails with that reason and the wait goes on for the next one.
    """
    deadline = d.clock.monotonic() + max(0.0, wait_seconds)
    while True:
        remaining = deadline - d.clock.monotonic()
        lease = await dispatch.claim_next(d, worker, max(remaining, 0.0), busy, wanted)
        if lease is None:
            return None
        try:
            if lease.approval_requested:
                # The grant was stripped: no worker (pinned keys or not) may be handed the run.
                raise Invalid(MISSING_GRANT)
            secrets = open_secrets(sealer, lease.run.sealed_secrets)
        except Invalid as exc:
            await dispatch.complete(
                d, worker, lease.run.id, lease.fencing_token, RunStatus.FAILED, exc.message
            )
            if remaining <= 0:
                return None
            continue
        env, secret_env = environment_of(lease.run.variables, secrets)
        # Only an earlier attempt can have written to the log: a first one starts at 0.
        offset = 0 if lease.fencing_token == 1 else await d.logs.size(lease.run.id)
        return Handover(lease, env, secret_env, offset, heartbeat_interval(lease.lease_seconds))
