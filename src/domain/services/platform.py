"""What the controller's use cases share: their ports, settings, the caller and auditing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import attrs

from domain.approvals import Approval
from domain.audit import AuditEvent, Outcome
from domain.automations import Run
from domain.ports import (
    ApprovalChannel,
    AuditLog,
    Cache,
    Clock,
    IdGenerator,
    Mailer,
    PasswordHasher,
    RunLogStore,
    Sealer,
    Secrets,
    TokenSigner,
    Totp,
    UnitOfWork,
    UnitOfWorkFactory,
)

# Called inside the unit of work that queues an approved run, before the run moves to queued
# and is announced: it returns the approval and the run to store (e.g. with a signed grant in
# ``Run.grant`` / ``Approval.grant``). Raising keeps the run waiting (nothing is committed).
# The grant signer plugs in here.
ApprovalHook = Callable[[UnitOfWork, Approval, Run], Awaitable[tuple[Approval, Run]]]


@attrs.frozen
class Limits:
    """Lifetimes and attempt limits; every number an operator may want to tune."""

    session_seconds: int = 12 * 3600
    verification_code_seconds: int = 24 * 3600
    reset_code_seconds: int = 15 * 60
    invitation_seconds: int = 7 * 24 * 3600
    login_attempts_per_account: int = 10
    login_attempts_per_address: int = 50
    mfa_attempts_per_account: int = 10
    attempt_window_seconds: int = 15 * 60


@attrs.frozen
class Platform:
    """Every port a controller use case may need; built by the composition root."""

    uow: UnitOfWorkFactory
    clock: Clock
    ids: IdGenerator
    passwords: PasswordHasher
    signer: TokenSigner
    secrets: Secrets
    totp: Totp
    cache: Cache
    audit: AuditLog
    mailer: Mailer
    logs: RunLogStore
    sealer: Sealer
    limits: Limits = Limits()
    public_url: str = "http://127.0.0.1:13371"
    # Where approval requests are shown besides the in-app list (Telegram, Slack, …).
    approval_channels: tuple[ApprovalChannel, ...] = ()
    on_approved: ApprovalHook | None = None
    # Told, after the commit, of a running run whose cancel was asked for: a worker in this
    # process may learn it at once instead of at its next heartbeat.
    on_cancel_asked: Callable[[Run], None] | None = None


T = TypeVar("T")
# Texts longer than this (in characters) are parsed on a thread; see ``parse``.
PARSE_INLINE_CHARS = 64 * 1024


async def parse(read: Callable[[str, str], T], text: str, source: str) -> T:
    """``read(text, source)``: a long text on a thread, since parsing a large YAML document
    takes a second or more that the event loop would otherwise not serve anyone else."""
    if len(text) <= PARSE_INLINE_CHARS:
        return read(text, source)
    return await asyncio.to_thread(read, text, source)


@attrs.frozen
class Caller:
    """Who is asking, from where: every use case receives one and audits with it."""

    user_id: str | None = None
    source_ip: str = ""
    user_agent: str = ""
    email: str = ""

    @property
    def actor(self) -> str:
        return self.user_id or (f"anonymous@{self.source_ip}" if self.source_ip else "anonymous")


async def record(
    p: Platform,
    caller: Caller,
    verb: str,
    resource_type: str,
    resource_id: str = "",
    *,
    org_id: str | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    data: Mapping[str, str] | None = None,
    actor: str | None = None,
    uow: UnitOfWork | None = None,
) -> None:
    """Record one audit event; never put secrets in ``data``.

    With ``uow`` the event is stored if and only if that unit commits, so a change and its
    event are kept together; call it before the unit's ``commit``. Without, the event is
    committed on its own (a refusal or anything else that changes no stored data).
    """
    event = AuditEvent(
        id=p.ids.new_id(),
        at=p.clock.now(),
        actor=actor or caller.actor,
        verb=verb,
        resource_type=resource_type,
        resource_id=resource_id,
        org_id=org_id,
        outcome=outcome,
        source_ip=caller.source_ip,
        user_agent=caller.user_agent[:256],
        data=dict(data or {}),
    )
    if uow is not None:
        await uow.audit.add(event)
        return
    async with p.uow() as own:
        await own.audit.add(event)
        await own.commit()
