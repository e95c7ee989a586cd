"""Every port Opsicle's core depends on, as async protocols with domain types in and out.

Adapters do not inherit these; mypy checks them through factories annotated with the port.
Each docstring states the contract and the domain errors an adapter raises.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

import attrs

from domain.approvals import (
    Approval,
    ApprovalSettings,
    ApprovalStatus,
    ChatClaim,
    StoredPolicy,
)
from domain.audit import AuditEvent, Outcome
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus
from domain.chat_links import ChatLink, ChatPlatform
from domain.grants import StoredGrantKey
from domain.orgs import Invitation, Membership, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Role
from domain.resources import AutomationSpec, Phase
from domain.templates import Template, TemplateGrant, TemplateInvitation, TemplateVersion
from domain.tokens import WorkerToken
from domain.users import CodePurpose, MfaEnrolment, OneTimeCode, User
from domain.webhooks import DeliveryStatus, WebhookDelivery
from domain.workers import Worker

# ---------------------------------------------------------------- time and identity


class Clock(Protocol):
    """Wall time (aware, UTC) for records; monotonic seconds for durations and deadlines."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class IdGenerator(Protocol):
    """New unique identifiers (strings that sort by creation time)."""

    def new_id(self) -> str: ...


class PasswordHasher(Protocol):
    def hash(self, password: str) -> str: ...

    def verify(self, hashed: str, password: str) -> bool:
        """True when ``password`` matches; never raises for a wrong password."""
        ...


class TokenSigner(Protocol):
    def sign(self, claims: Mapping[str, Any], ttl_seconds: int) -> str: ...

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unexpired token; raises ``Unauthenticated`` otherwise."""
        ...


class Secrets(Protocol):
    """Random secrets and their stored form; secrets are shown once and kept only as hashes."""

    def new_token(self, prefix: str = "opsicle-") -> str:
        """A high-entropy secret such as a worker token or a session secret."""
        ...

    def new_code(self, digits: int) -> str:
        """A random numeric code of exactly ``digits`` digits (may start with 0)."""
        ...

    def hash(self, secret: str) -> str:
        """The stored form of a high-entropy secret (not for passwords)."""
        ...


class Sealer(Protocol):
    """Authenticated encryption for values stored only to be handed back later (secrets)."""

    def seal(self, plain: bytes) -> str: ...

    def open(self, sealed: str) -> bytes:
        """Raises ``Invalid`` when ``sealed`` was not made by this key or was altered."""
        ...


class Totp(Protocol):
    """Time-based one-time passwords (RFC 6238: SHA-1, 6 digits, 30 s)."""

    def new_secret(self) -> str:
        """A new random base32 secret."""
        ...

    def provisioning_uri(self, secret: str, account: str) -> str:
        """The ``otpauth://`` URI authenticator apps read (usually from a QR code)."""
        ...

    def matching_step(self, secret: str, code: str, at: datetime) -> int | None:
        """The time step ``code`` is valid for at ``at`` (one step of drift allowed), or None."""
        ...


class HealthCheck(Protocol):
    """A store or service a role depends on, checked by ``/readyz``."""

    @property
    def name(self) -> str: ...

    async def check(self) -> None:
        """Return when the dependency answers; raise ``Unavailable`` naming it otherwise."""
        ...


# ---------------------------------------------------------------- platform data


T = TypeVar("T")


@attrs.frozen
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None = None


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises ``Conflict`` when the id or the email (case-insensitive) is taken."""
        ...

    async def get(self, user_id: str) -> User:
        """Raises ``NotFound``."""
        ...

    async def by_email(self, email: str) -> User:
        """Case-insensitive lookup; raises ``NotFound``."""
        ...

    async def update(self, user: User) -> None:
        """Raises ``NotFound``; ``Conflict`` when the new email is taken."""
        ...


class OrgRepository(Protocol):
    async def add(self, org: Organisation) -> None:
        """Raises ``Conflict`` when the id or the code (case-insensitive) is taken."""
        ...

    async def get(self, org_id: str) -> Organisation: ...

    async def by_code(self, code: str) -> Organisation: ...

    async def find(self, ref: str) -> Organisation:
        """The org whose id is ``ref`` or, failing that, whose code is (case-insensitive);
        raises ``NotFound``."""
        ...

    async def delete(self, org_id: str) -> None:
        """Removes the org with its members, roles and tokens; raises ``NotFound``."""
        ...

    async def of_user(self, user_id: str) -> list[Organisation]:
        """Orgs the user is a member of, by name."""
        ...

    async def add_member(self, membership: Membership) -> None:
        """Raises ``Conflict`` when the user is already a member."""
        ...

    async def member(self, org_id: str, user_id: str) -> Membership: ...

    async def find_member(self, ref: str, user_id: str) -> tuple[Organisation, Membership]:
        """``find(ref)`` and the user's membership in that org, read together; raises
        ``NotFound`` when there is no such org or the user is not a member."""
        ...

    async def update_member(self, membership: Membership) -> None: ...

    async def remove_member(self, org_id: str, user_id: str) -> None:
        """Also drops the member's role assignments; raises ``NotFound``."""
        ...

    async def members(self, org_id: str) -> list[Membership]: ...

    async def lock(self, org_id: str) -> None:
        """Hold the org until the unit of work ends: units of work that lock it take turns,
        so a check of what its members and roles leave (a last admin, someone who can still
        manage it) sees every change committed before its own. Raises ``NotFound``."""
        ...


class RoleRepository(Protocol):
    async def add(self, role: Role) -> None:
        """Raises ``Conflict`` when the org already has a role of that name."""
        ...

    async def get(self, role_id: str) -> Role: ...

    async def update(self, role: Role) -> None: ...

    async def delete(self, role_id: str) -> None:
        """Removes the role and its assignments; raises ``NotFound``."""
        ...

    async def of_org(self, org_id: str) -> list[Role]: ...

    async def assign(self, org_id: str, user_id: str, role_id: str) -> None:
        """Idempotent; raises ``NotFound`` when the member or role does not exist."""
        ...

    async def unassign(self, org_id: str, user_id: str, role_id: str) -> None: ...

    async def of_member(self, org_id: str, user_id: str) -> list[Role]: ...

    async def assign_token(self, token_id: str, role_id: str) -> None:
        """Idempotent; raises ``NotFound`` when the token or role does not exist, ``Invalid``
        when they belong to different orgs."""
        ...

    async def unassign_token(self, token_id: str, role_id: str) -> None: ...

    async def of_token(self, token_id: str) -> list[Role]: ...


class MfaRepository(Protocol):
    async def add(self, enrolment: MfaEnrolment) -> None:
        """Replaces an unconfirmed enrolment; raises ``Conflict`` over a confirmed one."""
        ...

    async def of_user(self, user_id: str) -> MfaEnrolment:
        """Raises ``NotFound`` when the user has no enrolment."""
        ...

    async def update(self, enrolment: MfaEnrolment) -> None: ...

    async def delete(self, user_id: str) -> None:
        """Removes the enrolment and the recovery codes; raises ``NotFound``."""
        ...

    async def set_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> None:
        """Replace the user's recovery codes with these (hashes of single-use codes)."""
        ...

    async def use_recovery_code(self, user_id: str, code_hash: str, at: datetime) -> bool:
        """Mark the code used; False when it is unknown or was used before."""
        ...

    async def recovery_codes_left(self, user_id: str) -> int: ...


class CodeRepository(Protocol):
    async def add(self, code: OneTimeCode) -> None: ...

    async def by_hash(self, purpose: CodePurpose, code_hash: str) -> OneTimeCode:
        """Raises ``NotFound``."""
        ...

    async def update(self, code: OneTimeCode) -> None: ...

    async def retire(self, user_id: str, purpose: CodePurpose, at: datetime) -> None:
        """Mark every unused code of that purpose used, so only a newer one works."""
        ...


class InvitationRepository(Protocol):
    async def add(self, invitation: Invitation) -> None:
        """Raises ``Conflict`` when a pending invitation to that org and email exists."""
        ...

    async def get(self, invitation_id: str) -> Invitation: ...

    async def by_code_hash(self, code_hash: str) -> Invitation: ...

    async def for_email(self, email: str) -> builtins.list[Invitation]:
        """Pending invitations addressed to ``email`` (case-insensitive), oldest first."""
        ...

    async def of_org(self, org_id: str) -> builtins.list[Invitation]: ...

    async def update(self, invitation: Invitation) -> None: ...


class TokenRepository(Protocol):
    async def add(self, token: WorkerToken) -> None: ...

    async def get(self, token_id: str) -> WorkerToken: ...

    async def update(self, token: WorkerToken) -> None: ...

    async def of_org(self, org_id: str) -> list[WorkerToken]: ...


class TemplateRepository(Protocol):
    async def add(self, template: Template, first: TemplateVersion) -> None:
        """Raises ``Conflict`` when the owner (org or user) already has a template of that name."""
        ...

    async def add_version(self, version: TemplateVersion) -> None:
        """Raises ``Conflict`` when that version number exists (a concurrent submit)."""
        ...

    async def get(self, template_id: str) -> Template: ...

    async def by_name(
        self, name: str, *, org_id: str | None = None, owner_id: str | None = None
    ) -> Template: ...

    async def in_org(self, ref: str, org_id: str) -> Template:
        """The template whose id is ``ref`` or, failing that, the org's template named ``ref``
        (``get`` then ``by_name`` in one read); raises ``NotFound``."""
        ...

    async def update(self, template: Template) -> None: ...

    async def delete(self, template_id: str) -> None:
        """Removes the template and every version; raises ``NotFound``."""
        ...

    async def list(
        self, *, org_id: str | None = None, owner_id: str | None = None
    ) -> list[Template]: ...

    async def versions(self, template_id: str) -> builtins.list[TemplateVersion]: ...

    async def version(self, template_id: str, version: int) -> TemplateVersion: ...

    async def grant(self, grant: TemplateGrant) -> None:
        """Insert or replace the user's rights on a personal template."""
        ...

    async def revoke(self, template_id: str, user_id: str) -> None:
        """Raises ``NotFound`` when the user has no grant."""
        ...

    async def grants(self, template_id: str) -> builtins.list[TemplateGrant]: ...

    async def grant_of(self, template_id: str, user_id: str) -> TemplateGrant:
        """Raises ``NotFound``."""
        ...

    async def shared_with(self, user_id: str) -> builtins.list[Template]:
        """Personal templates the user holds a grant on (their own included), by name."""
        ...

    async def add_invitation(self, invitation: TemplateInvitation) -> None:
        """Raises ``Conflict`` when a pending invitation to that template and email exists."""
        ...

    async def invitation(self, invitation_id: str) -> TemplateInvitation: ...

    async def invitation_by_code_hash(self, code_hash: str) -> TemplateInvitation: ...

    async def invitations_for(self, email: str) -> builtins.list[TemplateInvitation]:
        """Pending invitations addressed to ``email`` (case-insensitive), oldest first."""
        ...

    async def update_invitation(self, invitation: TemplateInvitation) -> None: ...


@attrs.frozen
class RunFilter:
    org_id: str | None = None
    template_id: str | None = None
    requested_by: str | None = None
    statuses: tuple[RunStatus, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None


class RunRepository(Protocol):
    async def add(self, run: Run) -> None: ...

    async def get(self, run_id: str) -> Run: ...

    async def update(
        self,
        run: Run,
        *,
        expected: RunStatus | None = None,
        expected_attempts: int | None = None,
    ) -> None:
        """Store ``run``'s state, all but what it was created with (``CREATED_WITH``, which
        stays as stored); raise ``Conflict`` unless the stored run still has the ``expected``
        status and ``expected_attempts`` (the lease's fencing token), when they are given."""
        ...

    async def expired_leases(self, at: datetime, limit: int = 100) -> builtins.list[Run]:
        """Running runs whose lease ended at or before ``at``, oldest lease first."""
        ...

    async def queued_ahead(self, run: Run, limit: int) -> int:
        """How many queued runs of the same org were created before ``run``, counted up to
        ``limit`` (a deep queue is not read whole to say that it is deep)."""
        ...

    async def count_by_status(self) -> dict[RunStatus, int]:
        """How many runs there are in each status, over every org (absent: none)."""
        ...

    async def queued_orgs(self, limit: int = 100) -> builtins.list[str]:
        """Ids of orgs that have queued runs, at most ``limit`` of them, in no set order."""
        ...

    async def list(
        self, flt: RunFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Run]:
        """Newest first; ``next_cursor`` continues where the page ended."""
        ...


class OutboxRepository(Protocol):
    async def add(self, message: OutboxMessage) -> None: ...

    async def pending(self, limit: int = 100) -> builtins.list[OutboxMessage]:
        """Unpublished messages, oldest first."""
        ...

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None: ...


class StoreQueues(Protocol):
    """The run queues where they are kept in the platform's own store (the embedded SQL
    queue, which units of work enqueue on themselves): a unit of work takes a message and
    makes the change it leads to in one transaction."""

    async def take(self, topic: str) -> QueueMessage | None:
        """The next ready message of ``topic``, oldest first: it leaves the queue when the
        unit of work commits, and stays when it does not. None when none is ready."""
        ...


class WorkerRepository(Protocol):
    async def save(self, worker: Worker) -> None:
        """Insert or replace by id."""
        ...

    async def get(self, worker_id: str) -> Worker: ...

    async def of_org(self, org_id: str) -> list[Worker]: ...

    async def last_seen(self, org_id: str) -> datetime | None:
        """When a worker of the org was last seen; None when none ever was."""
        ...


@attrs.frozen
class ApprovalFilter:
    org_id: str | None = None
    # Requests this user may answer.
    responder_id: str | None = None
    run_id: str | None = None
    statuses: tuple[ApprovalStatus, ...] = ()
    # Requests decided (or expired) at or after this time.
    decided_since: datetime | None = None


class ApprovalRepository(Protocol):
    async def add(self, approval: Approval) -> None:
        """Raises ``Conflict`` when the id or the run already has a request."""
        ...

    async def get(self, approval_id: str) -> Approval: ...

    async def of_run(self, run_id: str) -> Approval:
        """The run's approval request; raises ``NotFound`` when it has none."""
        ...

    async def update(self, approval: Approval, *, expected: ApprovalStatus | None = None) -> None:
        """Store ``approval``; raise ``Conflict`` unless the stored one still has the
        ``expected`` status, when it is given (two deciders: the second loses)."""
        ...

    async def list(
        self, flt: ApprovalFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Approval]:
        """Newest first; ``next_cursor`` continues where the page ended."""
        ...

    async def due(self, at: datetime, limit: int = 100) -> builtins.list[Approval]:
        """Pending requests that expired at or before ``at``, oldest expiry first."""
        ...


class PolicyRepository(Protocol):
    async def add(self, policy: StoredPolicy) -> None:
        """Raises ``Conflict`` when the org already has a policy of that name."""
        ...

    async def get(self, policy_id: str) -> StoredPolicy: ...

    async def by_name(self, org_id: str, name: str) -> StoredPolicy:
        """Exact name; raises ``NotFound``."""
        ...

    async def update(self, policy: StoredPolicy) -> None:
        """Raises ``Conflict`` when renamed onto another policy's name."""
        ...

    async def delete(self, policy_id: str) -> None: ...

    async def of_org(self, org_id: str) -> builtins.list[StoredPolicy]:
        """By name."""
        ...

    async def settings(self, org_id: str) -> ApprovalSettings:
        """The org's approval settings; defaults (nothing required) when never saved."""
        ...

    async def save_settings(self, settings: ApprovalSettings) -> None:
        """Insert or replace."""
        ...


@attrs.frozen
class WebhookDeliveryFilter:
    org_id: str | None = None
    approval_id: str | None = None
    status: DeliveryStatus | None = None


class WebhookDeliveryRepository(Protocol):
    """Webhook deliveries of approval decisions (an outbox: added with the decision)."""

    async def add(self, delivery: WebhookDelivery) -> None:
        """Raises ``Conflict`` when the id exists."""
        ...

    async def get(self, delivery_id: str) -> WebhookDelivery:
        """Raises ``NotFound``."""
        ...

    async def of_approval(self, approval_id: str) -> builtins.list[WebhookDelivery]:
        """The request's deliveries, oldest first."""
        ...

    async def claim(
        self, at: datetime, until: datetime, token: str, limit: int = 20
    ) -> builtins.list[WebhookDelivery]:
        """Lease pending deliveries due at ``at`` (and not leased past ``at``) to ``token``
        until ``until``, oldest due first, and return them leased. Each row is taken with a
        conditional update, so two callers never both hold one."""
        ...

    async def finish(self, delivery: WebhookDelivery, token: str) -> None:
        """Store the outcome of an attempt (the delivery as ``after_attempt`` made it); raise
        ``Conflict`` when the stored delivery is no longer leased to ``token``."""
        ...

    async def list(
        self, flt: WebhookDeliveryFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[WebhookDelivery]:
        """Newest first; ``next_cursor`` continues where the page ended."""
        ...

    async def update(self, delivery: WebhookDelivery, *, expected: DeliveryStatus) -> None:
        """Store ``delivery`` when the stored one still has the ``expected`` status; raise
        ``Conflict`` otherwise (someone changed it first), ``NotFound`` when there is none."""
        ...

    async def purge(self, finished_before: datetime, limit: int = 500) -> int:
        """Delete at most ``limit`` finished deliveries (delivered or given up) that finished
        before ``finished_before``; return how many were deleted."""
        ...


class UnitOfWork(Protocol):
    """One transaction over the platform data: commit makes every change visible at once."""

    users: UserRepository
    orgs: OrgRepository
    roles: RoleRepository
    tokens: TokenRepository
    mfa: MfaRepository
    codes: CodeRepository
    invitations: InvitationRepository
    outbox: OutboxRepository
    templates: TemplateRepository
    runs: RunRepository
    workers: WorkerRepository
    approvals: ApprovalRepository
    policies: PolicyRepository
    webhooks: WebhookDeliveryRepository
    audit: AuditRecorder
    # The run queues, when this store keeps them; None when they are another store's.
    queues: StoreQueues | None

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Rolls back whatever was not committed."""
        ...

    async def commit(self) -> None:
        """Raises ``Unavailable`` when the store does not answer (nothing is then stored)."""
        ...

    async def rollback(self) -> None: ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class RunLogStore(Protocol):
    """Run output as offset-addressed chunks: bounded memory at any size, idempotent appends."""

    async def append(self, run_id: str, offset: int, data: bytes) -> int:
        """Store ``data`` at ``offset``; return the log's new length.

        A chunk already stored at that offset is ignored (so a resend stores it once); an
        offset beyond the end raises ``Conflict`` naming the expected offset.
        """
        ...

    async def read(self, run_id: str, offset: int = 0, limit: int = 65536) -> bytes: ...

    async def size(self, run_id: str) -> int: ...


# ---------------------------------------------------------------- audit, cache, queue, mail


@attrs.frozen
class AuditFilter:
    actor: str | None = None
    org_id: str | None = None
    verb: str | None = None
    resource_type: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLog(Protocol):
    async def append(self, event: AuditEvent) -> AuditEvent:
        """Chain ``event`` to the last one (sets ``previous_hash`` and ``hash``) and store it.

        Appends are serialised so the chain has no forks. Raises ``Unavailable``.
        """
        ...

    async def list(
        self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[AuditEvent]:
        """Oldest first; ``next_cursor`` continues where the page ended."""
        ...

    def all(self) -> AsyncIterator[AuditEvent]:
        """Every event in chain order, for verification."""
        ...


class AuditRecorder(Protocol):
    """The audit events of one unit of work: kept if and only if the unit commits."""

    async def add(self, event: AuditEvent) -> None:
        """Record ``event`` with the unit's changes: chained into the audit log when it lives
        in the same store, else put in the audit outbox for the forwarder. Raises ``Conflict``
        for an id already recorded, ``Unavailable``."""
        ...


class AuditOutbox(Protocol):
    """Audit events committed with their changes, waiting to be appended to a separate audit
    log (``domain.services.audit.forward``). Each call is its own transaction."""

    async def claim(self, owner: str, now: datetime, until: datetime) -> bool:
        """Take or extend the forwarding lease: True when ``owner`` now holds it until
        ``until`` (it was free, expired at ``now``, or ``owner``'s already)."""
        ...

    async def release(self, owner: str) -> None:
        """Give the lease up if ``owner`` holds it, so another forwarder need not wait."""
        ...

    async def pending(self, limit: int = 100) -> builtins.list[AuditEvent]:
        """Waiting events in the order they were committed, not chained (empty hashes)."""
        ...

    async def remove(self, ids: Sequence[str]) -> None:
        """Forget forwarded events; ids no longer waiting are ignored."""
        ...

    async def list(
        self, flt: AuditFilter, *, limit: int = 50, cursor: str | None = None
    ) -> Page[AuditEvent]:
        """Waiting events matching ``flt``, oldest first, for listings."""
        ...


class Cache(Protocol):
    """Short-lived shared values; never the only copy of anything that must survive."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl_seconds: float | None = None,
        only_if_absent: bool = False,
    ) -> bool:
        """Store the value; with ``only_if_absent`` return False (and store nothing) if present."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def incr(self, key: str, *, ttl_seconds: float) -> int:
        """Add one and return the count; the key expires ``ttl_seconds`` after the first."""
        ...

    async def ttl(self, key: str) -> float | None:
        """Seconds left, or None when the key is absent or has no expiry."""
        ...


@attrs.frozen
class QueueMessage:
    id: str
    body: bytes


class Delivery(Protocol):
    message: QueueMessage
    attempt: int

    async def ack(self) -> None:
        """Confirm processing; the message is not delivered again."""
        ...

    async def nak(self, delay_seconds: float = 0) -> None:
        """Hand the message back for redelivery after ``delay_seconds``."""
        ...


class Queue(Protocol):
    """Durable work queue: each message is delivered to one consumer at a time until acked."""

    async def publish(self, message: QueueMessage) -> None:
        """Returns once the message is stored; a second publish of the same id is dropped."""
        ...

    async def pull(self, timeout_seconds: float) -> Delivery | None:
        """The next message, waiting up to ``timeout_seconds``; None when there was none."""
        ...

    async def depth(self) -> int: ...


@attrs.frozen
class Email:
    to: str
    subject: str
    text: str


class Mailer(Protocol):
    async def send(self, email: Email) -> None:
        """Raises ``Unavailable`` when the message could not be handed over."""
        ...


class GrantKeyRepository(Protocol):
    """The approver's grant signing key ring, one per store, shared by every process on it;
    each call is its own transaction."""

    async def keys(self) -> builtins.list[StoredGrantKey]:
        """Every stored key, oldest first; empty before the first key is stored."""
        ...

    async def add_first(self, keys: Sequence[StoredGrantKey]) -> builtins.list[StoredGrantKey]:
        """Store ``keys`` (exactly one of them current) as the ring when it has none yet,
        atomically across processes. The ring afterwards: ``keys``, or the keys another
        process stored first (then ``keys`` are not stored)."""
        ...

    async def rotate(
        self, current_key_id: str, new: StoredGrantKey, *, at: datetime, expires_at: datetime
    ) -> builtins.list[StoredGrantKey] | None:
        """In one transaction: retire the current key ``current_key_id`` at ``at`` (kept until
        ``expires_at``), drop retired keys whose ``expires_at`` is at or before ``at``, and
        store ``new`` as the current key. The ring afterwards, or None (nothing changed) when
        ``current_key_id`` is not the current key: another process rotated first, or the ring
        has no key yet."""
        ...


class RelayClaims(Protocol):
    """Leases that let one approver process at a time post an approval's chat messages;
    each call is its own transaction."""

    async def claim(
        self, approval_id: str, channel: str, owner: str, *, now: datetime, until: datetime
    ) -> ChatClaim | None:
        """Take the claim on (``approval_id``, ``channel``) for ``owner`` until ``until``:
        when nobody holds it, ``owner`` holds it already (renewed), or its holder's lease
        ended at or before ``now`` (taken over: ``fence`` goes up). None when another owner
        holds it still."""
        ...

    async def release(self, approval_id: str, channel: str, owner: str) -> None:
        """Give the claim up if ``owner`` holds it; nothing happens otherwise."""
        ...

    async def purge(self, ended_before: datetime, limit: int = 500) -> int:
        """Delete at most ``limit`` claims whose lease ended before ``ended_before`` and whose
        approval is no longer pending (nothing will claim them again); return how many."""
        ...


class ApprovalChannel(Protocol):
    """A place humans answer approval requests (Telegram, Slack, in-app)."""

    @property
    def name(self) -> str: ...

    async def announce(
        self, approval: Approval, run: Run, *, recover: bool = False
    ) -> Mapping[str, str]:
        """Ask the channel's humans to decide; raises ``Unavailable``. Returns where the
        request was shown (e.g. chat id -> message id), for ``conclude`` to find it later,
        even in another process. With ``recover``, an earlier attempt may have shown it
        without recording where: a channel that can look its messages up adopts them
        rather than asking again."""
        ...

    async def conclude(
        self, approval: Approval, run: Run, refs: Mapping[str, str] | None = None
    ) -> None:
        """Show the final outcome where the request was asked: the ``refs`` an ``announce``
        returned, and whatever this channel remembers itself."""
        ...


@attrs.frozen
class WebhookRequest:
    url: str
    body: bytes
    headers: Mapping[str, str]


@attrs.frozen
class WebhookReply:
    status: int
    # The answer's Retry-After header as sent ("" when it had none).
    retry_after: str = ""


class WebhookSender(Protocol):
    """POSTs webhook requests; never follows redirects."""

    async def post(self, request: WebhookRequest) -> WebhookReply:
        """The answer's HTTP status and Retry-After header; raises ``Unavailable`` when no
        answer came (connection refused or reset, timeout, TLS failure)."""
        ...


# ---------------------------------------------------------------- execution


@attrs.frozen
class Mount:
    host: str
    container: str
    read_only: bool = False


@attrs.frozen
class PhaseJob:
    """One phase to execute: its commands, environment, working directory and mounts."""

    run_id: str
    phase: Phase
    env: Mapping[str, str]
    workdir: str
    mounts: tuple[Mount, ...] = ()
    network: bool = False


class Stream(StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


@attrs.frozen
class OutputLine:
    stream: Stream
    text: str


LineSink = Callable[[OutputLine], Awaitable[None]]


@attrs.frozen
class PhaseOutcome:
    status: PhaseStatus
    exit_code: int | None
    detail: str = ""


class Runner(Protocol):
    """Executes phases: commands joined with ``&&`` under ``/bin/sh -c``, output line by line."""

    @property
    def name(self) -> str: ...

    def describe(self) -> str:
        """One line saying how phases run (sandboxed or not, which engine)."""
        ...

    async def prepare(self, spec: AutomationSpec, mounts: Sequence[Mount]) -> None:
        """Check before any phase runs that every phase can; raise ``Invalid`` naming the phase
        (a missing image, a mount this runner cannot provide) or ``Unavailable``."""
        ...

    async def run_phase(self, job: PhaseJob, sink: LineSink) -> PhaseOutcome:
        """Run one phase to its end and return how it ended.

        Past ``job.phase.timeout`` seconds the phase is stopped (SIGTERM to everything it
        started, a grace period, then SIGKILL) and the outcome is ``timed_out``. Cancelling the
        awaiting task stops it the same way and then re-raises the cancellation. Nothing the
        phase started is left running either way.
        """
        ...


@attrs.frozen
class Claim:
    """A run held under a lease, with what the worker needs to execute it.

    ``env`` holds the variables as the phases see them, secret values opened; ``secret_env``
    names the entries whose values must be masked in output. ``log_offset`` is where this
    attempt's output continues the run's log (an earlier attempt may have written some).
    """

    run: Run
    lease_id: str
    fencing_token: int
    lease_seconds: float
    env: Mapping[str, str] = attrs.field(factory=dict)
    secret_env: tuple[str, ...] = ()
    heartbeat_seconds: float | None = None
    log_offset: int = 0


class CoordinatorClient(Protocol):
    """The worker's only link to Opsicle: outbound requests to a coordinator."""

    async def claim(self, wait_seconds: float) -> Claim | None:
        """Long-poll for a run; None when none came within ``wait_seconds``."""
        ...

    async def heartbeat(self, claim: Claim) -> bool:
        """Extend the lease; False when the run was cancelled. Raises ``Conflict`` if lost."""
        ...

    async def send_log(self, claim: Claim, offset: int, data: bytes) -> bool:
        """Store a chunk of output at ``offset`` (a resent chunk is stored once); like
        ``heartbeat``, False when the run was cancelled. Raises ``Conflict`` if lost."""
        ...

    async def report_phase(self, claim: Claim, result: PhaseResult) -> None: ...

    async def complete(
        self,
        claim: Claim,
        status: RunStatus,
        reason: str = "",
        phases: Sequence[PhaseResult] = (),
    ) -> None:
        """End the run with a final status, recording first the phase results in ``phases``
        (ones not reported yet) in the same step; a repeat of the same completion is
        accepted. Raises ``Conflict`` when the lease was lost."""
        ...

    async def release(self, claim: Claim) -> None:
        """Hand the run back unfinished (a draining worker): it is queued again.
        Raises ``Conflict`` when the lease was lost."""
        ...


# ---------------------------------------------------------------- chat identities


class ChatLinkRepository(Protocol):
    """Which Opsicle user a Telegram or Slack identity is; each call is its own transaction."""

    async def save(self, link: ChatLink) -> None:
        """Insert the link, or replace the one the chat identity had (relinking moves it)."""
        ...

    async def get(self, platform: ChatPlatform, chat_user_id: str) -> ChatLink:
        """Raises ``NotFound`` when the chat identity is not linked."""
        ...

    async def of_user(self, user_id: str) -> builtins.list[ChatLink]:
        """The user's links, by platform then chat id."""
        ...

    async def remove(self, platform: ChatPlatform, chat_user_id: str) -> None:
        """Forget the link; nothing happens when there is none."""
        ...
