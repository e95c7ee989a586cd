"""Approval commands: the approver's grant keys, approval requests, org policies and settings."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from cyclopts import Parameter

from domain.errors import FieldError, Invalid
from entrypoints.cli import verbs
from entrypoints.cli.client import current, run, say, show
from entrypoints.cli.orgs import org_update
from entrypoints.output import error_console

if TYPE_CHECKING:
    from adapters.http.approvals_client import ApprovalsClient
    from adapters.http.controller_client import ControllerClient
    from adapters.http.schemas.approvals import ApprovalInfo, PolicyInfo

DataDir = Annotated[
    str | None,
    Parameter(help="The server's data directory. Default: ~/.local/share/opsicle"),
]


def _approvals(c: ControllerClient) -> ApprovalsClient:
    from adapters.http.approvals_client import ApprovalsClient

    return ApprovalsClient(c)


DatabaseUrl = Annotated[
    str | None,
    Parameter(help="SQLAlchemy URL of the platform database. Default: SQLite in data-dir"),
]


def _print_keys(data_dir: str | None, database_url: str | None, rotate: bool) -> int:
    import asyncio

    from adapters.crypto.grants import Ed25519KeyRing, public_pem
    from entrypoints.bootstrap import approver_keys

    resolved = current().with_flags(data_dir=data_dir, database_url=database_url)

    async def main() -> Ed25519KeyRing:
        async with approver_keys(resolved) as store:
            now = datetime.now(UTC)
            return await (store.rotate(now) if rotate else store.ring(now))

    ring = asyncio.run(main())
    keys = sorted(ring.keys, key=lambda k: (k.retired_at is None, k.created_at))
    if current()["output"] == "text":
        for key in keys:
            state = "current" if key.key_id == ring.key_id else f"retired {key.retired_at}"
            say(f"# key {key.key_id} ({state})")
            print(public_pem(key.public), end="")
    else:
        show(
            [
                {
                    "keyId": k.key_id,
                    "current": k.key_id == ring.key_id,
                    "retiredAt": k.retired_at.isoformat() if k.retired_at else None,
                    "publicKey": public_pem(k.public),
                }
                for k in keys
            ]
        )
    return 0


@verbs.get.command(name="approver-key")
def get_approver_key(*, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> int:
    """Print the approver's public keys (PEM), current key last, for workers to pin with
    'opsicle start worker --approver-key FILE'. Retired keys are listed while grants they
    signed may still be valid. Run it with the server's settings (database URL and secret key,
    or its data directory); the key is generated on first use."""
    return _print_keys(data_dir, database_url, rotate=False)


@verbs.rotate.command(name="approver-key")
def rotate_approver_key(*, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> int:
    """Generate a new signing key for approval grants and retire the current one; grants the
    old key signed still verify until they expire. Every server role on the same database signs
    with the new key from its next grant on; pin the new public key (printed) on workers."""
    return _print_keys(data_dir, database_url, rotate=True)


# ---------------------------------------------------------------- approval requests

ControllerUrl = Annotated[
    str | None,
    Parameter(
        help="Controller to talk to. Default: OPSICLE_CONTROLLER_URL, the config file, "
        "or http://127.0.0.1:13371"
    ),
]
ApprovalId = Annotated[str, Parameter(help="The approval request's id.")]
Org = Annotated[str, Parameter(name="--org", help="The organisation (code or id).")]
APPROVAL_COLUMNS = ("id", "runName", "status", "waiting", "requestedBy", "expiresAt")
POLICY_COLUMNS = ("name", "id", "createdBy", "createdAt", "updatedAt")


def _show_approval(info: ApprovalInfo) -> None:
    if current()["output"] == "text":
        say(f"approval {info.id} of run {info.run_id} ({info.run_name}): {info.waiting}")
    show(info)


@verbs.list_.command(name="approvals")
def list_approvals(
    *,
    org: Annotated[
        str | None,
        Parameter(help="This org's requests (code or id). Default: the ones I may answer."),
    ] = None,
    status: Annotated[
        str | None,
        Parameter(help="Only these statuses, comma-separated: pending, approved, rejected, "
                  "expired. Default: pending"),
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """List approval requests: without --org, the pending ones you may answer."""
    statuses = [s.strip() for s in (status or "").split(",") if s.strip()]
    page = run(
        controller_url, lambda c: _approvals(c).list_approvals(org=org, statuses=statuses)
    )
    show(page.items, columns=APPROVAL_COLUMNS)
    return 0


@verbs.get.command(name="approval")
def get_approval(approval_id: ApprovalId, /, *, controller_url: ControllerUrl = None) -> int:
    """Show an approval request: its run, who answered, and what it still waits for."""
    _show_approval(run(controller_url, lambda c: _approvals(c).get(approval_id)))
    return 0


def approve(
    approval_id: ApprovalId,
    /,
    *,
    code: Annotated[
        str | None,
        Parameter(help="Your TOTP code, when the policy requires one (asked for on a terminal "
                  "when needed and omitted)."),
    ] = None,
    comment: Annotated[str, Parameter(help="A note kept with your answer.")] = "",
    controller_url: ControllerUrl = None,
) -> int:
    """Approve a run's approval request (you cannot approve your own run)."""

    async def action(c: ControllerClient) -> ApprovalInfo:
        sdk = _approvals(c)
        answer = code
        if answer is None:
            info = await sdk.get(approval_id)
            if info.code_required:
                answer = _ask_code()
        return await sdk.approve(approval_id, answer or "", comment)

    _show_approval(run(controller_url, action))
    return 0


def _ask_code() -> str:
    if not sys.stdin.isatty():
        raise Invalid(
            "this approval needs a TOTP code",
            errors=(FieldError("code", "pass --code 123456 (from your authenticator)"),),
        )
    from rich.prompt import Prompt

    return Prompt.ask("Authenticator code", password=True, console=error_console())


def reject(
    approval_id: ApprovalId,
    /,
    *,
    reason: Annotated[str, Parameter(help="Why (shown to the requester and kept in the audit).")],
    controller_url: ControllerUrl = None,
) -> int:
    """Reject a run's approval request: the run ends rejected at once."""
    _show_approval(run(controller_url, lambda c: _approvals(c).reject(approval_id, reason)))
    return 0


# ---------------------------------------------------------------- org policies


def _read(file: str) -> tuple[str, str]:
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise Invalid(
            f"{file}: cannot be read", errors=(FieldError("file", f"cannot be read: {exc}"),)
        ) from exc
    return text, "<stdin>" if file == "-" else file


File = Annotated[
    str, Parameter(name=["--file", "-f"], help="The ApprovalPolicy YAML ('-': stdin).")
]


def _show_policy(info: PolicyInfo) -> None:
    if current()["output"] == "text":
        say(f"# approval policy {info.name} ({info.id}) of org {info.org_id}")
        print(info.content, end="" if info.content.endswith("\n") else "\n")
    else:
        show(info)


@verbs.create.command(name="approval-policy")
def create_policy(*, file: File, org: Org, controller_url: ControllerUrl = None) -> int:
    """Store an ApprovalPolicy in the org, for templates to name in policyRef (org config).
    The file is checked here first; problems name FILE:LINE:COLUMN."""
    from adapters.template_reader import read_policy

    text, source = _read(file)
    read_policy(text, source)
    made = run(controller_url, lambda c: _approvals(c).create_policy(org, text, source))
    say(f"approval policy {made.name} created ({made.id})")
    if current()["output"] != "text":
        show(made)
    return 0


@verbs.list_.command(name="approval-policies")
def list_policies(*, org: Org, controller_url: ControllerUrl = None) -> int:
    """List the org's approval policies."""
    show(run(controller_url, lambda c: _approvals(c).list_policies(org)),
         columns=POLICY_COLUMNS)
    return 0


@verbs.get.command(name="approval-policy")
def get_policy(
    name: Annotated[str, Parameter(help="The policy's name or id.")],
    /,
    *,
    org: Org,
    controller_url: ControllerUrl = None,
) -> int:
    """Show an approval policy as YAML (edit it and pass it to 'update approval-policy')."""
    _show_policy(run(controller_url, lambda c: _approvals(c).get_policy(org, name)))
    return 0


@verbs.update.command(name="approval-policy")
def update_policy(
    *,
    file: File,
    org: Org,
    name: Annotated[
        str | None, Parameter(help="The policy to replace. Default: metadata.name of the file.")
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Replace an approval policy with the file's (org config); new runs use it at once."""
    from adapters.template_reader import read_policy

    text, source = _read(file)
    target = name or read_policy(text, source).metadata.name
    changed = run(
        controller_url, lambda c: _approvals(c).update_policy(org, target, text, source)
    )
    say(f"approval policy {changed.name} updated")
    if current()["output"] != "text":
        show(changed)
    return 0


@verbs.remove.command(name="approval-policy")
def remove_policy(
    name: Annotated[str, Parameter(help="The policy's name or id.")],
    /,
    *,
    org: Org,
    controller_url: ControllerUrl = None,
) -> int:
    """Remove an approval policy from the org (org config)."""
    gone = run(controller_url, lambda c: _approvals(c).remove_policy(org, name))
    say(f"approval policy {gone.name} removed")
    if current()["output"] != "text":
        show(gone)
    return 0


# ---------------------------------------------------------------- org settings


@org_update.command(name="approvals")
def update_org_approvals(
    *,
    org: Org,
    required: Annotated[
        bool | None,
        Parameter(negative="--not-required",
                  help="Every run of the org needs approval (--not-required: only by label)."),
    ] = None,
    labels: Annotated[
        str | None,
        Parameter(help="Templates carrying any of these labels need approval: k=v,k2=v2 "
                  "('' clears them)."),
    ] = None,
    policy: Annotated[
        str | None,
        Parameter(help="The org policy applied then, when the template brings none "
                  "('' for the default: one org admin, in-app)."),
    ] = None,
    controller_url: ControllerUrl = None,
) -> int:
    """Change when the org's runs need approval (org config)."""
    parsed = None
    if labels is not None:
        from adapters.http.schemas.worker import parse_labels

        parsed = parse_labels(labels)
    changed = run(
        controller_url,
        lambda c: _approvals(c).update_settings(
            org, required=required, labels=parsed, policy_ref=policy
        ),
    )
    if current()["output"] == "text":
        wanted = ",".join(f"{k}={v}" for k, v in sorted(changed.labels.items())) or "none"
        say(f"org approvals: required for every run: {'yes' if changed.required else 'no'}; "
            f"for labels: {wanted}; policy: {changed.policy_ref or 'default'}")
    else:
        show(changed)
    return 0
