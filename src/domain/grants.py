"""Signed approval grants: what the approvers said yes to, bound to exactly what then runs.

A grant names the run, its template and version, a SHA-256 of the run's spec (the canonical
data form from ``resources.to_data``) and a SHA-256 of the environment its phases will see,
the approvers, the approval and an expiry. The approver signs its canonical bytes; a worker
that holds the approver's pinned public keys checks the signature and then ``check_grant``
against the run it is about to execute.

Secret variables: the variables hash covers the environment exactly as the phases see it,
secret values in plain text *inside the hash input*. That is the only form a pull worker can
check (it receives the opened values, never the sealing key), and it binds what executes.
The hash input is salted with the run id, so no precomputed table serves two runs; still, a
short, guessable secret could be confirmed from a grant by someone who can read it (the org's
workers, which receive the value anyway, and readers of the runs table).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs

from domain.automations import Run
from domain.errors import Forbidden, Invalid
from domain.resources import Automation, Metadata, to_data

GRANT_FORMAT = 1
DEFAULT_GRANT_TTL = timedelta(hours=24)


class GrantRefused(Forbidden):
    """A grant does not allow this run; ``reason`` names what does not match."""

    code = "grant_refused"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class Grant:
    run_id: str
    template_id: str | None
    template_version: int | None
    content_sha256: str
    variables_sha256: str
    approver_ids: tuple[str, ...]
    approval_id: str
    issued_at: datetime
    expires_at: datetime
    key_id: str


@attrs.frozen
class SignedGrant:
    """A grant with the Ed25519 signature over its canonical bytes by key ``grant.key_id``."""

    grant: Grant
    signature: bytes

    @property
    def key_id(self) -> str:
        return self.grant.key_id


# ------------------------------------------------------------------ hashes of what runs


def _canonical(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def content_sha256(run: Run) -> str:
    """SHA-256 of the run's spec snapshot in its canonical data form (phases, images,
    commands, timeouts, volume mounts)."""
    spec = to_data(Automation(metadata=Metadata(name="run"), spec=run.spec))["spec"]
    return hashlib.sha256(_canonical(spec)).hexdigest()


def variables_sha256(run_id: str, env: Mapping[str, str]) -> str:
    """SHA-256 of the phases' environment (secret values included), salted with the run id."""
    return hashlib.sha256(_canonical({"env": dict(env), "run": run_id})).hexdigest()


# ------------------------------------------------------------------ canonical encoding


def _when(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("grant times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def grant_data(grant: Grant) -> dict[str, Any]:
    return {
        "v": GRANT_FORMAT,
        "run": grant.run_id,
        "template": grant.template_id,
        "templateVersion": grant.template_version,
        "content": grant.content_sha256,
        "variables": grant.variables_sha256,
        "approvers": list(grant.approver_ids),
        "approval": grant.approval_id,
        "issuedAt": _when(grant.issued_at),
        "expiresAt": _when(grant.expires_at),
        "key": grant.key_id,
    }


def encode_grant(grant: Grant) -> bytes:
    """The bytes that are signed: sorted-key compact JSON, ASCII, times in UTC."""
    return _canonical(grant_data(grant))


def _bad(message: str) -> Invalid:
    return Invalid(f"the grant is malformed: {message}", code="grant_malformed")


def decode_grant(payload: bytes) -> Grant:
    """The grant ``payload`` encodes; raises ``Invalid`` unless it is exactly canonical."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad("not JSON") from exc
    if not isinstance(data, dict):
        raise _bad("not an object")
    if data.get("v") != GRANT_FORMAT:
        raise _bad(f"unknown format {data.get('v')!r}")
    try:
        grant = Grant(
            run_id=_text(data, "run"),
            template_id=None if data.get("template") is None else _text(data, "template"),
            template_version=_version(data.get("templateVersion")),
            content_sha256=_text(data, "content"),
            variables_sha256=_text(data, "variables"),
            approver_ids=tuple(_texts(data.get("approvers"))),
            approval_id=_text(data, "approval"),
            issued_at=_time(data, "issuedAt"),
            expires_at=_time(data, "expiresAt"),
            key_id=_text(data, "key"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad(str(exc)) from exc
    if encode_grant(grant) != payload:
        raise _bad("not in canonical form")
    return grant


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _texts(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("approvers is not a list of strings")
    return list(value)


def _version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("templateVersion is not an integer")
    return value


def _time(data: Mapping[str, Any], key: str) -> datetime:
    at = datetime.fromisoformat(_text(data, key))
    if at.tzinfo is None:
        raise ValueError(f"{key} has no time zone")
    return at


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _bad("not base64url") from exc


def encode_signed(signed: SignedGrant) -> str:
    """The wire and stored form: ``base64url(canonical grant).base64url(signature)``."""
    return f"{_b64(encode_grant(signed.grant))}.{_b64(signed.signature)}"


def decode_signed(text: str) -> SignedGrant:
    """Raises ``Invalid`` when ``text`` is not a grant in its wire form (signature unchecked)."""
    payload, sep, signature = text.strip().partition(".")
    if not sep or not payload or not signature:
        raise _bad("expected <grant>.<signature>")
    return SignedGrant(decode_grant(_unb64(payload)), _unb64(signature))


# ------------------------------------------------------------------ issuing and checking


def grant_for(
    run: Run,
    env: Mapping[str, str],
    approvers: Iterable[str],
    *,
    approval_id: str,
    key_id: str,
    at: datetime,
    ttl: timedelta = DEFAULT_GRANT_TTL,
) -> Grant:
    """The grant for ``run`` as it stands, executed with ``env`` (its opened environment)."""
    return Grant(
        run_id=run.id,
        template_id=run.template_id,
        template_version=run.template_version,
        content_sha256=content_sha256(run),
        variables_sha256=variables_sha256(run.id, env),
        approver_ids=tuple(sorted(set(approvers))),
        approval_id=approval_id,
        issued_at=at,
        expires_at=at + ttl,
        key_id=key_id,
    )


def check_grant(grant: Grant, run: Run, env: Mapping[str, str], at: datetime) -> None:
    """Raise ``GrantRefused`` naming the first thing that differs between the grant and
    ``run`` about to execute with ``env``, or when the grant has expired at ``at``."""
    if grant.run_id != run.id:
        raise GrantRefused(f"grant does not match: it is for run {grant.run_id}, not {run.id}")
    if grant.template_id != run.template_id:
        raise GrantRefused("grant does not match: template differs")
    if grant.template_version != run.template_version:
        raise GrantRefused(
            f"grant does not match: template version differs (approved "
            f"{grant.template_version}, about to run {run.template_version})"
        )
    if grant.content_sha256 != content_sha256(run):
        raise GrantRefused("grant does not match: content hash differs")
    if grant.variables_sha256 != variables_sha256(run.id, env):
        raise GrantRefused("grant does not match: variables hash differs")
    if at >= grant.expires_at:
        raise GrantRefused(f"grant expired at {_when(grant.expires_at)}")


def check_run_grant(
    verifier: GrantVerifier | None,
    run: Run,
    env: Mapping[str, str],
    at: datetime,
    *,
    required: bool = False,
) -> None:
    """What a worker checks before it executes ``run`` with ``env``: a run that carries a
    grant (or any run, when ``required``) runs only if the grant verifies under a pinned key
    and matches exactly. Raises ``GrantRefused`` with the reason."""
    if not run.grant:
        if required:
            raise GrantRefused("the run carries no approval grant and this worker requires one")
        return
    if verifier is None:
        raise GrantRefused("the run carries an approval grant but this worker pins no approver key")
    try:
        signed = decode_signed(run.grant)
    except Invalid as exc:
        raise GrantRefused(exc.message) from exc
    check_grant(verifier.verify(signed), run, env, at)


# ------------------------------------------------------------------ ports


@attrs.frozen
class StoredGrantKey:
    """One key of the approver's ring as the store keeps it: the public key in base64, the
    private key sealed with the server's secret key (None for a key known only by its public
    half), and when it was created, retired (None while current) and may be dropped (None
    while current: ``retired_at`` plus the longest grant lifetime)."""

    key_id: str
    public_key: str
    sealed_private: str | None
    created_at: datetime
    retired_at: datetime | None = None
    expires_at: datetime | None = None


class GrantSigner(Protocol):
    """Signs grants with the current key of the approver's key ring."""

    @property
    def key_id(self) -> str:
        """The id of the key ``sign`` uses now; grants name it in ``key_id``."""
        ...

    def sign(self, grant: Grant) -> SignedGrant:
        """``grant`` (its ``key_id`` set to the current key) signed."""
        ...


class GrantVerifier(Protocol):
    """Checks grant signatures against a set of pinned public keys."""

    def verify(self, signed: SignedGrant) -> Grant:
        """The grant when its signature is valid under the pinned key it names; raises
        ``GrantRefused`` for an unknown key ("unknown key …") or a bad signature."""
        ...
