"""The platform data in memory: ``InMemoryUnitOfWork`` with the same rules as the SQL store."""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import copy
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

import attrs

from domain.approvals import Approval, ApprovalSettings, ApprovalStatus, StoredPolicy
from domain.audit import AuditEvent
from domain.automations import CREATED_WITH, Run, RunStatus
from domain.errors import Conflict, FieldError, Invalid, NotFound
from domain.orgs import Invitation, InvitationStatus, Membership, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Role
from domain.ports import (
    ApprovalFilter,
    ApprovalRepository,
    AuditLog,
    AuditRecorder,
    CodeRepository,
    InvitationRepository,
    MfaRepository,
    OrgRepository,
    OutboxRepository,
    Page,
    PolicyRepository,
    QueueMessage,
    RoleRepository,
    RunFilter,
    RunRepository,
    StoreQueues,
    TemplateRepository,
    TokenRepository,
    UnitOfWork,
    UserRepository,
    WebhookDeliveryFilter,
    WebhookDeliveryRepository,
    WorkerRepository,
)
from domain.templates import (
    Template,
    TemplateGrant,
    TemplateInvitation,
    TemplateInvitationStatus,
    TemplateVersion,
)
from domain.tokens import WorkerToken
from domain.users import CodePurpose, MfaEnrolment, OneTimeCode, User
from domain.webhooks import DeliveryStatus, WebhookDelivery
from domain.workers import Worker

MAX_PAGE = 1000
T = TypeVar("T")


@attrs.define
class PlatformState:
    """Everything the platform stores; a unit of work edits a copy and swaps it in on commit."""

    users: dict[str, User] = attrs.field(factory=dict)
    orgs: dict[str, Organisation] = attrs.field(factory=dict)
    members: dict[tuple[str, str], Membership] = attrs.field(factory=dict)
    roles: dict[str, Role] = attrs.field(factory=dict)
    assignments: set[tuple[str, str, str]] = attrs.field(factory=set)
    tokens: dict[str, WorkerToken] = attrs.field(factory=dict)
    token_roles: set[tuple[str, str]] = attrs.field(factory=set)
    mfa: dict[str, MfaEnrolment] = attrs.field(factory=dict)
    # (user id, code hash) -> when it was used, or None while it is still good.
    recovery_codes: dict[tuple[str, str], datetime | None] = attrs.field(factory=dict)
    codes: dict[str, OneTimeCode] = attrs.field(factory=dict)
    invitations: dict[str, Invitation] = attrs.field(factory=dict)
    templates: dict[str, Template] = attrs.field(factory=dict)
    versions: dict[tuple[str, int], TemplateVersion] = attrs.field(factory=dict)
    # (template id, user id) -> the user's rights on that personal template.
    template_grants: dict[tuple[str, str], TemplateGrant] = attrs.field(factory=dict)
    template_invitations: dict[str, TemplateInvitation] = attrs.field(factory=dict)
    outbox: dict[str, OutboxMessage] = attrs.field(factory=dict)
    # The run queues when the store keeps them: message id -> (topic, message, taken), in
    # the order they were enqueued; taken ones stay, so their ids are not enqueued again.
    queued: dict[str, tuple[str, QueueMessage, bool]] = attrs.field(factory=dict)
    runs: dict[str, Run] = attrs.field(factory=dict)
    workers: dict[str, Worker] = attrs.field(factory=dict)
    approvals: dict[str, Approval] = attrs.field(factory=dict)
    policies: dict[str, StoredPolicy] = attrs.field(factory=dict)
    approval_settings: dict[str, ApprovalSettings] = attrs.field(factory=dict)
    webhooks: dict[str, WebhookDelivery] = attrs.field(factory=dict)
    # Audit events waiting for the forwarder, in the order they were committed: id -> (seq, e).
    audit_outbox: dict[str, tuple[int, AuditEvent]] = attrs.field(factory=dict)
    audit_seq: int = 0

    def copy(self) -> PlatformState:
        # The values are frozen, so copying each container is enough to isolate a unit.
        return PlatformState(**{a.name: copy.copy(getattr(self, a.name))
                                for a in attrs.fields(PlatformState)})


class InMemoryPlatformStore:
    """The shared state behind every ``InMemoryUnitOfWork``; one unit writes at a time.

    With ``audit`` the units' audit events are appended to that log as they commit (one store,
    like the SQL audit log); without, they wait in ``state.audit_outbox`` for the forwarder.
    """

    def __init__(self, audit: AuditLog | None = None, *, enqueue: bool = False) -> None:
        self.state = PlatformState()
        self.lock = asyncio.Lock()
        self.audit = audit
        self.enqueue = enqueue

    def unit_of_work(self) -> UnitOfWork:
        return InMemoryUnitOfWork(self)


class InMemoryUnitOfWork:
    def __init__(self, store: InMemoryPlatformStore) -> None:
        self._store = store
        self._staged: PlatformState | None = None
        self.users: UserRepository = InMemoryUserRepository(self)
        self.orgs: OrgRepository = InMemoryOrgRepository(self)
        self.roles: RoleRepository = InMemoryRoleRepository(self)
        self.tokens: TokenRepository = InMemoryTokenRepository(self)
        self.mfa: MfaRepository = InMemoryMfaRepository(self)
        self.codes: CodeRepository = InMemoryCodeRepository(self)
        self.invitations: InvitationRepository = InMemoryInvitationRepository(self)
        self.outbox: OutboxRepository = (InMemoryEnqueuingOutboxRepository(self) if store.enqueue
                                         else InMemoryOutboxRepository(self))
        self.templates: TemplateRepository = InMemoryTemplateRepository(self)
        self.runs: RunRepository = InMemoryRunRepository(self)
        self.workers: WorkerRepository = InMemoryWorkerRepository(self)
        self.approvals: ApprovalRepository = InMemoryApprovalRepository(self)
        self.policies: PolicyRepository = InMemoryPolicyRepository(self)
        self.webhooks: WebhookDeliveryRepository = InMemoryWebhookDeliveryRepository(self)
        self.audit: AuditRecorder = InMemoryAuditRecorder(self)
        self.queues: StoreQueues | None = InMemoryStoreQueues(self) if store.enqueue else None

    async def __aenter__(self) -> InMemoryUnitOfWork:
        if self._staged is not None:
            raise RuntimeError("this unit of work is already open")
        await self._store.lock.acquire()
        self._staged = self._store.state.copy()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._staged is not None:
            self._staged = None
            self._store.lock.release()

    async def commit(self) -> None:
        log = self._store.audit
        recorded = [e for _, e in self.state.audit_outbox.values()] if log else []
        if recorded:
            self.state.audit_outbox.clear()
        self._store.state = self.state
        self._staged = self._store.state.copy()
        if log is not None:
            for event in recorded:  # still under the store's lock: in commit order
                await log.append(event)

    async def rollback(self) -> None:
        if self._staged is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        self._staged = self._store.state.copy()

    @property
    def state(self) -> PlatformState:
        if self._staged is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._staged


def _get(items: dict[Any, T], key: object, missing: str) -> T:
    try:
        return items[key]
    except KeyError:
        raise NotFound(missing) from None


def _sorted(items: Iterable[T], key: Callable[[T], Any]) -> builtins.list[T]:
    return sorted(items, key=key)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid("the page size is not valid",
                      errors=(FieldError("limit", f"expected 1 to {MAX_PAGE}"),))


def encode_cursor(*key: object) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> builtins.list[Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc
    if not isinstance(key, list) or len(key) != arity:
        raise bad_cursor()
    return key


def bad_cursor() -> Invalid:
    return Invalid("the page cursor is not valid", code="invalid_cursor",
                   errors=(FieldError("cursor", "is not a cursor this list returned"),))


Created = TypeVar("Created", Run, Approval, WebhookDelivery)


def newest_first(items: Iterable[Created], wanted: Callable[[Created], bool], limit: int,
                 cursor: str | None) -> Page[Created]:
    """The ``wanted`` items newest first by (``created_at``, ``id``), a page of ``limit``
    after the item ``cursor`` names."""
    check_limit(limit)
    after: tuple[datetime, str] | None = None
    if cursor is not None:
        at, item_id = decode_cursor(cursor, 2)
        try:
            after = (datetime.fromisoformat(at), str(item_id))
        except (TypeError, ValueError) as e:
            raise bad_cursor() from e
    found = sorted((i for i in items
                    if wanted(i) and (after is None or (i.created_at, i.id) < after)),
                   key=lambda i: (i.created_at, i.id), reverse=True)
    page = found[:limit]
    return Page(tuple(page), encode_cursor(page[-1].created_at.astimezone(UTC).isoformat(),
                                           page[-1].id) if len(found) > limit else None)


class _Repository:
    def __init__(self, uow: InMemoryUnitOfWork) -> None:
        self._uow = uow

    @property
    def _s(self) -> PlatformState:
        return self._uow.state


class InMemoryUserRepository(_Repository):
    def _email_taken(self, email: str, by_other_than: str) -> bool:
        key = email.lower()
        return any(u.email.lower() == key and u.id != by_other_than for u in self._s.users.values())

    async def add(self, user: User) -> None:
        if user.id in self._s.users or self._email_taken(user.email, user.id):
            raise Conflict(f"user {user.id} or email {user.email} already exists")
        self._s.users[user.id] = user

    async def get(self, user_id: str) -> User:
        return _get(self._s.users, user_id, f"user {user_id} not found")

    async def by_email(self, email: str) -> User:
        key = email.lower()
        for u in self._s.users.values():
            if u.email.lower() == key:
                return u
        raise NotFound(f"no user has email {email}")

    async def update(self, user: User) -> None:
        await self.get(user.id)
        if self._email_taken(user.email, user.id):
            raise Conflict(f"email {user.email} is taken")
        self._s.users[user.id] = user


class InMemoryOrgRepository(_Repository):
    async def add(self, org: Organisation) -> None:
        code = org.code.lower()
        if org.id in self._s.orgs or any(o.code.lower() == code for o in self._s.orgs.values()):
            raise Conflict(f"organisation {org.id} or code {org.code} already exists")
        self._s.orgs[org.id] = org

    async def get(self, org_id: str) -> Organisation:
        return _get(self._s.orgs, org_id, f"organisation {org_id} not found")

    async def lock(self, org_id: str) -> None:
        # A unit of work holds the whole store until it ends.
        await self.get(org_id)

    async def find(self, ref: str) -> Organisation:
        if ref in self._s.orgs:
            return self._s.orgs[ref]
        try:
            return await self.by_code(ref)
        except NotFound:
            raise NotFound(f"organisation {ref} not found") from None

    async def by_code(self, code: str) -> Organisation:
        key = code.lower()
        for o in self._s.orgs.values():
            if o.code.lower() == key:
                return o
        raise NotFound(f"no organisation has code {code}")

    async def delete(self, org_id: str) -> None:
        await self.get(org_id)
        s = self._s
        del s.orgs[org_id]
        s.members = {k: v for k, v in s.members.items() if k[0] != org_id}
        gone = {r.id for r in s.roles.values() if r.org_id == org_id}
        s.roles = {k: v for k, v in s.roles.items() if k not in gone}
        s.assignments = {a for a in s.assignments if a[0] != org_id and a[2] not in gone}
        s.tokens = {k: v for k, v in s.tokens.items() if v.org_id != org_id}
        s.token_roles = {(tk, r) for (tk, r) in s.token_roles
                         if tk in s.tokens and r not in gone}
        s.invitations = {k: v for k, v in s.invitations.items() if v.org_id != org_id}
        s.policies = {k: v for k, v in s.policies.items() if v.org_id != org_id}
        s.approval_settings.pop(org_id, None)

    async def of_user(self, user_id: str) -> list[Organisation]:
        orgs = [self._s.orgs[o] for (o, u) in self._s.members if u == user_id]
        return _sorted(orgs, lambda o: (o.name, o.id))

    async def add_member(self, membership: Membership) -> None:
        await self.get(membership.org_id)
        await self._uow.users.get(membership.user_id)
        key = (membership.org_id, membership.user_id)
        if key in self._s.members:
            raise Conflict(
                f"user {membership.user_id} is already a member of {membership.org_id}")
        self._s.members[key] = membership

    async def member(self, org_id: str, user_id: str) -> Membership:
        return _get(self._s.members, (org_id, user_id),
                    f"user {user_id} is not a member of organisation {org_id}")

    async def find_member(self, ref: str, user_id: str) -> tuple[Organisation, Membership]:
        org = await self.find(ref)
        return org, await self.member(org.id, user_id)

    async def update_member(self, membership: Membership) -> None:
        await self.member(membership.org_id, membership.user_id)
        self._s.members[(membership.org_id, membership.user_id)] = membership

    async def remove_member(self, org_id: str, user_id: str) -> None:
        await self.member(org_id, user_id)
        del self._s.members[(org_id, user_id)]
        self._s.assignments = {a for a in self._s.assignments if a[:2] != (org_id, user_id)}

    async def members(self, org_id: str) -> list[Membership]:
        return _sorted((m for (o, _), m in self._s.members.items() if o == org_id),
                       lambda m: (m.joined_at, m.user_id))


class InMemoryRoleRepository(_Repository):
    def _name_taken(self, role: Role) -> bool:
        return any(r.org_id == role.org_id and r.name == role.name and r.id != role.id
                   for r in self._s.roles.values())

    async def add(self, role: Role) -> None:
        await self._uow.orgs.get(role.org_id)
        if role.id in self._s.roles or self._name_taken(role):
            raise Conflict(f"role {role.id} or a role named {role.name!r} already exists")
        self._s.roles[role.id] = role

    async def get(self, role_id: str) -> Role:
        return _get(self._s.roles, role_id, f"role {role_id} not found")

    async def update(self, role: Role) -> None:
        stored = await self.get(role.id)
        # The org of a role never changes; the SQL store does not rewrite it either.
        role = attrs.evolve(role, org_id=stored.org_id)
        if self._name_taken(role):
            raise Conflict(f"the organisation already has a role named {role.name!r}")
        self._s.roles[role.id] = role

    async def delete(self, role_id: str) -> None:
        await self.get(role_id)
        del self._s.roles[role_id]
        self._s.assignments = {a for a in self._s.assignments if a[2] != role_id}
        self._s.token_roles = {a for a in self._s.token_roles if a[1] != role_id}

    async def of_org(self, org_id: str) -> list[Role]:
        return _sorted((r for r in self._s.roles.values() if r.org_id == org_id),
                       lambda r: (r.name, r.id))

    async def assign(self, org_id: str, user_id: str, role_id: str) -> None:
        await self._uow.orgs.member(org_id, user_id)
        role = await self.get(role_id)
        if role.org_id != org_id:
            raise NotFound(f"organisation {org_id} has no role {role_id}")
        self._s.assignments.add((org_id, user_id, role_id))

    async def unassign(self, org_id: str, user_id: str, role_id: str) -> None:
        self._s.assignments.discard((org_id, user_id, role_id))

    async def of_member(self, org_id: str, user_id: str) -> list[Role]:
        return _sorted((self._s.roles[r] for (o, u, r) in self._s.assignments
                        if (o, u) == (org_id, user_id)), lambda r: (r.name, r.id))

    async def assign_token(self, token_id: str, role_id: str) -> None:
        token = await self._uow.tokens.get(token_id)
        role = await self.get(role_id)
        if role.org_id != token.org_id:
            raise Invalid(f"role {role_id} and token {token_id} belong to different organisations",
                          errors=(FieldError("role_id", "is not a role of the token's org"),))
        self._s.token_roles.add((token_id, role_id))

    async def unassign_token(self, token_id: str, role_id: str) -> None:
        self._s.token_roles.discard((token_id, role_id))

    async def of_token(self, token_id: str) -> list[Role]:
        return _sorted((self._s.roles[r] for (tk, r) in self._s.token_roles if tk == token_id),
                       lambda r: (r.name, r.id))


class InMemoryMfaRepository(_Repository):
    async def add(self, enrolment: MfaEnrolment) -> None:
        await self._uow.users.get(enrolment.user_id)
        stored = self._s.mfa.get(enrolment.user_id)
        if stored is not None and stored.active:
            raise Conflict(f"user {enrolment.user_id} already has multi-factor authentication")
        self._s.mfa[enrolment.user_id] = enrolment

    async def of_user(self, user_id: str) -> MfaEnrolment:
        return _get(self._s.mfa, user_id, f"user {user_id} has no multi-factor enrolment")

    async def update(self, enrolment: MfaEnrolment) -> None:
        await self.of_user(enrolment.user_id)
        self._s.mfa[enrolment.user_id] = enrolment

    async def delete(self, user_id: str) -> None:
        await self.of_user(user_id)
        del self._s.mfa[user_id]
        self._drop_codes(user_id)

    def _drop_codes(self, user_id: str) -> None:
        self._s.recovery_codes = {k: v for k, v in self._s.recovery_codes.items()
                                  if k[0] != user_id}

    async def set_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> None:
        await self._uow.users.get(user_id)
        self._drop_codes(user_id)
        for h in code_hashes:
            self._s.recovery_codes[(user_id, h)] = None

    async def use_recovery_code(self, user_id: str, code_hash: str, at: datetime) -> bool:
        key = (user_id, code_hash)
        if key not in self._s.recovery_codes or self._s.recovery_codes[key] is not None:
            return False
        self._s.recovery_codes[key] = at
        return True

    async def recovery_codes_left(self, user_id: str) -> int:
        return sum(1 for (u, _), used in self._s.recovery_codes.items()
                   if u == user_id and used is None)


class InMemoryCodeRepository(_Repository):
    async def add(self, code: OneTimeCode) -> None:
        await self._uow.users.get(code.user_id)
        if code.id in self._s.codes:
            raise Conflict(f"code {code.id} already exists")
        self._s.codes[code.id] = code

    async def by_hash(self, purpose: CodePurpose, code_hash: str) -> OneTimeCode:
        # Hashes are not unique; should two codes share one, the newer wins.
        found = [c for c in self._s.codes.values()
                 if c.purpose is purpose and c.code_hash == code_hash]
        if not found:
            raise NotFound(f"no {purpose.value} code matches")
        return max(found, key=lambda c: (c.created_at, c.id))

    async def update(self, code: OneTimeCode) -> None:
        _get(self._s.codes, code.id, f"code {code.id} not found")
        self._s.codes[code.id] = code

    async def retire(self, user_id: str, purpose: CodePurpose, at: datetime) -> None:
        for c in builtins.list(self._s.codes.values()):
            if c.user_id == user_id and c.purpose is purpose and c.used_at is None:
                self._s.codes[c.id] = attrs.evolve(c, used_at=at)


class InMemoryInvitationRepository(_Repository):
    def _pending_taken(self, invitation: Invitation) -> bool:
        if invitation.status is not InvitationStatus.PENDING:
            return False
        key = invitation.email.lower()
        return any(i.org_id == invitation.org_id and i.email.lower() == key
                   and i.status is InvitationStatus.PENDING and i.id != invitation.id
                   for i in self._s.invitations.values())

    async def add(self, invitation: Invitation) -> None:
        await self._uow.orgs.get(invitation.org_id)
        if invitation.id in self._s.invitations or self._pending_taken(invitation):
            raise Conflict(f"invitation {invitation.id} or a pending invitation of "
                           f"{invitation.email} to {invitation.org_id} already exists")
        self._s.invitations[invitation.id] = invitation

    async def get(self, invitation_id: str) -> Invitation:
        return _get(self._s.invitations, invitation_id, f"invitation {invitation_id} not found")

    async def by_code_hash(self, code_hash: str) -> Invitation:
        found = [i for i in self._s.invitations.values() if i.code_hash == code_hash]
        if not found:
            raise NotFound("no invitation matches the code")
        return max(found, key=lambda i: (i.created_at, i.id))

    async def for_email(self, email: str) -> builtins.list[Invitation]:
        key = email.lower()
        return _sorted((i for i in self._s.invitations.values()
                        if i.email.lower() == key and i.status is InvitationStatus.PENDING),
                       lambda i: (i.created_at, i.id))

    async def of_org(self, org_id: str) -> builtins.list[Invitation]:
        return _sorted((i for i in self._s.invitations.values() if i.org_id == org_id),
                       lambda i: (i.created_at, i.id))

    async def update(self, invitation: Invitation) -> None:
        stored = await self.get(invitation.id)
        # An invitation never moves to another org; the SQL store does not rewrite it either.
        invitation = attrs.evolve(invitation, org_id=stored.org_id)
        if self._pending_taken(invitation):
            raise Conflict(
                f"a pending invitation of {invitation.email} to the org already exists")
        self._s.invitations[invitation.id] = invitation


class InMemoryTokenRepository(_Repository):
    async def add(self, token: WorkerToken) -> None:
        await self._uow.orgs.get(token.org_id)
        if token.id in self._s.tokens:
            raise Conflict(f"token {token.id} already exists")
        self._s.tokens[token.id] = token

    async def get(self, token_id: str) -> WorkerToken:
        return _get(self._s.tokens, token_id, f"token {token_id} not found")

    async def update(self, token: WorkerToken) -> None:
        await self.get(token.id)
        self._s.tokens[token.id] = token

    async def of_org(self, org_id: str) -> list[WorkerToken]:
        return _sorted((t for t in self._s.tokens.values() if t.org_id == org_id),
                       lambda t: (t.name, t.id))


def _owner(org_id: str | None, owner_id: str | None) -> tuple[str, str | None]:
    """An org's templates belong to the org; only templates outside any org belong to a user."""
    return ("org", org_id) if org_id is not None else ("user", owner_id)


class InMemoryTemplateRepository(_Repository):
    def _name_taken(self, template: Template) -> bool:
        owner = _owner(template.org_id, template.owner_id)
        return any(_owner(t.org_id, t.owner_id) == owner and t.name == template.name
                   and t.id != template.id for t in self._s.templates.values())

    async def add(self, template: Template, first: TemplateVersion) -> None:
        if template.id in self._s.templates or self._name_taken(template):
            raise Conflict(
                f"template {template.id} or one named {template.name!r} already exists")
        self._s.templates[template.id] = template
        await self.add_version(first)

    async def add_version(self, version: TemplateVersion) -> None:
        await self.get(version.template_id)
        key = (version.template_id, version.version)
        if key in self._s.versions:
            raise Conflict(
                f"template {version.template_id} already has version {version.version}")
        self._s.versions[key] = version

    async def get(self, template_id: str) -> Template:
        return _get(self._s.templates, template_id, f"template {template_id} not found")

    async def in_org(self, ref: str, org_id: str) -> Template:
        if ref in self._s.templates:
            return self._s.templates[ref]
        return await self.by_name(ref, org_id=org_id)

    async def by_name(self, name: str, *, org_id: str | None = None,
                      owner_id: str | None = None) -> Template:
        owner = _owner(org_id, owner_id)
        for t in self._s.templates.values():
            if t.name == name and _owner(t.org_id, t.owner_id) == owner:
                return t
        raise NotFound(f"template {name!r} not found")

    async def update(self, template: Template) -> None:
        await self.get(template.id)
        if self._name_taken(template):
            raise Conflict(f"a template named {template.name!r} already exists")
        self._s.templates[template.id] = template

    async def delete(self, template_id: str) -> None:
        await self.get(template_id)
        s = self._s
        del s.templates[template_id]
        s.versions = {k: v for k, v in s.versions.items() if k[0] != template_id}
        s.template_grants = {k: v for k, v in s.template_grants.items() if k[0] != template_id}
        s.template_invitations = {k: v for k, v in s.template_invitations.items()
                                  if v.template_id != template_id}

    async def list(self, *, org_id: str | None = None, owner_id: str | None = None
                   ) -> builtins.list[Template]:
        items: Iterable[Template] = self._s.templates.values()
        if org_id is not None or owner_id is not None:
            owner = _owner(org_id, owner_id)
            items = [t for t in items if _owner(t.org_id, t.owner_id) == owner]
        return _sorted(items, lambda t: (t.name, t.id))

    async def versions(self, template_id: str) -> builtins.list[TemplateVersion]:
        return _sorted((v for (t, _), v in self._s.versions.items() if t == template_id),
                       lambda v: v.version)

    async def version(self, template_id: str, version: int) -> TemplateVersion:
        return _get(self._s.versions, (template_id, version),
                    f"template {template_id} has no version {version}")

    async def grant(self, grant: TemplateGrant) -> None:
        await self.get(grant.template_id)
        self._s.template_grants[(grant.template_id, grant.user_id)] = grant

    async def revoke(self, template_id: str, user_id: str) -> None:
        await self.grant_of(template_id, user_id)
        del self._s.template_grants[(template_id, user_id)]

    async def grants(self, template_id: str) -> builtins.list[TemplateGrant]:
        return _sorted((g for (t, _), g in self._s.template_grants.items() if t == template_id),
                       lambda g: (g.granted_at, g.user_id))

    async def grant_of(self, template_id: str, user_id: str) -> TemplateGrant:
        return _get(self._s.template_grants, (template_id, user_id),
                    f"user {user_id} has no grant on template {template_id}")

    async def shared_with(self, user_id: str) -> builtins.list[Template]:
        granted = {t for (t, u) in self._s.template_grants if u == user_id}
        return _sorted((t for t in self._s.templates.values() if t.org_id is None
                        and (t.owner_id == user_id or t.id in granted)),
                       lambda t: (t.name, t.id))

    def _pending_taken(self, invitation: TemplateInvitation) -> bool:
        if invitation.status is not TemplateInvitationStatus.PENDING:
            return False
        key = invitation.email.lower()
        return any(i.template_id == invitation.template_id and i.email.lower() == key
                   and i.status is TemplateInvitationStatus.PENDING and i.id != invitation.id
                   for i in self._s.template_invitations.values())

    async def add_invitation(self, invitation: TemplateInvitation) -> None:
        await self.get(invitation.template_id)
        if invitation.id in self._s.template_invitations or self._pending_taken(invitation):
            raise Conflict(f"invitation {invitation.id} or a pending invitation of "
                           f"{invitation.email} to template {invitation.template_id} "
                           "already exists")
        self._s.template_invitations[invitation.id] = invitation

    async def invitation(self, invitation_id: str) -> TemplateInvitation:
        return _get(self._s.template_invitations, invitation_id,
                    f"template invitation {invitation_id} not found")

    async def invitation_by_code_hash(self, code_hash: str) -> TemplateInvitation:
        # Hashes are not unique; should two invitations share one, the newer wins.
        found = [i for i in self._s.template_invitations.values() if i.code_hash == code_hash]
        if not found:
            raise NotFound("no template invitation matches the code")
        return max(found, key=lambda i: (i.created_at, i.id))

    async def invitations_for(self, email: str) -> builtins.list[TemplateInvitation]:
        key = email.lower()
        return _sorted((i for i in self._s.template_invitations.values()
                        if i.email.lower() == key
                        and i.status is TemplateInvitationStatus.PENDING),
                       lambda i: (i.created_at, i.id))

    async def update_invitation(self, invitation: TemplateInvitation) -> None:
        stored = await self.invitation(invitation.id)
        # An invitation never moves to another template; the SQL store does not rewrite it.
        invitation = attrs.evolve(invitation, template_id=stored.template_id)
        if self._pending_taken(invitation):
            raise Conflict(
                f"a pending invitation of {invitation.email} to the template already exists")
        self._s.template_invitations[invitation.id] = invitation


class InMemoryOutboxRepository(_Repository):
    async def add(self, message: OutboxMessage) -> None:
        if message.id in self._s.outbox:
            raise Conflict(f"outbox message {message.id} already exists")
        self._s.outbox[message.id] = message

    async def pending(self, limit: int = 100) -> builtins.list[OutboxMessage]:
        check_limit(limit)
        return _sorted((o for o in self._s.outbox.values() if o.published_at is None),
                       lambda o: (o.created_at, o.id))[:limit]

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        for message_id in ids:
            stored = self._s.outbox.get(message_id)
            if stored is not None and stored.published_at is None:
                self._s.outbox[message_id] = attrs.evolve(stored, published_at=at)


class InMemoryEnqueuingOutboxRepository(InMemoryOutboxRepository):
    """The outbox of a store that keeps the run queues: ``add`` puts the message on its
    queue, in the unit of work."""

    async def add(self, message: OutboxMessage) -> None:
        if message.id in self._s.queued:
            raise Conflict(f"queue message {message.id} already exists")
        self._s.queued[message.id] = (message.topic, QueueMessage(message.id, message.body),
                                      False)


class InMemoryStoreQueues(_Repository):
    async def take(self, topic: str) -> QueueMessage | None:
        for message_id, (queued_topic, message, taken) in self._s.queued.items():
            if queued_topic == topic and not taken:
                self._s.queued[message_id] = (topic, message, True)
                return message
        return None


class InMemoryAuditRecorder(_Repository):
    async def add(self, event: AuditEvent) -> None:
        if event.id in self._s.audit_outbox:
            raise Conflict(f"audit event {event.id} already exists")
        self._s.audit_seq += 1
        self._s.audit_outbox[event.id] = (self._s.audit_seq, event)


class InMemoryRunRepository(_Repository):
    async def add(self, run: Run) -> None:
        if run.id in self._s.runs:
            raise Conflict(f"run {run.id} already exists")
        self._s.runs[run.id] = run

    async def get(self, run_id: str) -> Run:
        return _get(self._s.runs, run_id, f"run {run_id} not found")

    async def update(self, run: Run, *, expected: RunStatus | None = None,
                     expected_attempts: int | None = None) -> None:
        stored = await self.get(run.id)
        if expected_attempts is not None and stored.attempts != expected_attempts:
            raise Conflict(f"run {run.id} is at attempt {stored.attempts}, "
                           f"not {expected_attempts}: its lease was lost", code="lease_lost")
        if expected is not None and stored.status is not expected:
            raise Conflict(f"run {run.id} is {stored.status.value}, not {expected.value}")
        self._s.runs[run.id] = attrs.evolve(
            run, **{name: getattr(stored, name) for name in CREATED_WITH})

    async def expired_leases(self, at: datetime, limit: int = 100) -> builtins.list[Run]:
        check_limit(limit)
        expired = [r for r in self._s.runs.values() if r.status is RunStatus.RUNNING
                   and r.lease_expires_at is not None and r.lease_expires_at <= at]
        return sorted(expired, key=lambda r: (r.lease_expires_at or at, r.id))[:limit]

    async def count_by_status(self) -> dict[RunStatus, int]:
        return dict(Counter(r.status for r in self._s.runs.values()))

    async def queued_ahead(self, run: Run, limit: int) -> int:
        check_limit(limit)
        key = (run.created_at, run.id)
        return min(limit, sum(1 for r in self._s.runs.values() if r.org_id == run.org_id
                              and r.status is RunStatus.QUEUED and (r.created_at, r.id) < key))

    async def queued_orgs(self, limit: int = 100) -> builtins.list[str]:
        check_limit(limit)
        found = {r.org_id for r in self._s.runs.values()
                 if r.status is RunStatus.QUEUED and r.org_id is not None}
        return sorted(found)[:limit]

    async def list(self, flt: RunFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[Run]:
        def wanted(r: Run) -> bool:
            return ((flt.org_id is None or r.org_id == flt.org_id)
                    and (flt.template_id is None or r.template_id == flt.template_id)
                    and (flt.requested_by is None or r.requested_by == flt.requested_by)
                    and (not flt.statuses or r.status in flt.statuses)
                    and (flt.created_after is None or r.created_at >= flt.created_after)
                    and (flt.created_before is None or r.created_at < flt.created_before))

        return newest_first(self._s.runs.values(), wanted, limit, cursor)


class InMemoryWorkerRepository(_Repository):
    async def save(self, worker: Worker) -> None:
        self._s.workers[worker.id] = worker

    async def get(self, worker_id: str) -> Worker:
        return _get(self._s.workers, worker_id, f"worker {worker_id} not found")

    async def of_org(self, org_id: str) -> builtins.list[Worker]:
        return _sorted((w for w in self._s.workers.values() if w.org_id == org_id),
                       lambda w: (w.name, w.id))

    async def last_seen(self, org_id: str) -> datetime | None:
        return max((w.last_seen_at for w in self._s.workers.values() if w.org_id == org_id),
                   default=None)


class InMemoryApprovalRepository(_Repository):
    async def add(self, approval: Approval) -> None:
        if approval.id in self._s.approvals:
            raise Conflict(f"approval {approval.id} already exists")
        if any(a.run_id == approval.run_id for a in self._s.approvals.values()):
            raise Conflict(f"run {approval.run_id} already has an approval request")
        self._s.approvals[approval.id] = approval

    async def get(self, approval_id: str) -> Approval:
        return _get(self._s.approvals, approval_id, f"approval {approval_id} not found")

    async def of_run(self, run_id: str) -> Approval:
        for approval in self._s.approvals.values():
            if approval.run_id == run_id:
                return approval
        raise NotFound(f"run {run_id} has no approval request")

    async def update(self, approval: Approval, *, expected: ApprovalStatus | None = None) -> None:
        stored = await self.get(approval.id)
        if expected is not None and stored.status is not expected:
            raise Conflict(f"approval {approval.id} is {stored.status.value}, "
                           f"not {expected.value}", code="approval_changed")
        self._s.approvals[approval.id] = approval

    async def list(self, flt: ApprovalFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[Approval]:
        def wanted(a: Approval) -> bool:
            return ((flt.org_id is None or a.org_id == flt.org_id)
                    and (flt.responder_id is None or flt.responder_id in a.responders)
                    and (flt.run_id is None or a.run_id == flt.run_id)
                    and (not flt.statuses or a.status in flt.statuses)
                    and (flt.decided_since is None or (
                        a.decided_at is not None and a.decided_at >= flt.decided_since)))

        return newest_first(self._s.approvals.values(), wanted, limit, cursor)

    async def due(self, at: datetime, limit: int = 100) -> builtins.list[Approval]:
        check_limit(limit)
        return _sorted((a for a in self._s.approvals.values()
                        if a.status is ApprovalStatus.PENDING and a.expires_at <= at),
                       lambda a: (a.expires_at, a.id))[:limit]


class InMemoryPolicyRepository(_Repository):
    async def add(self, policy: StoredPolicy) -> None:
        if policy.id in self._s.policies:
            raise Conflict(f"approval policy {policy.id} already exists")
        self._check_name(policy)
        self._s.policies[policy.id] = policy

    def _check_name(self, policy: StoredPolicy) -> None:
        for other in self._s.policies.values():
            if (other.id != policy.id and other.org_id == policy.org_id
                    and other.name == policy.name):
                raise Conflict(f"the org already has an approval policy named {policy.name}")

    async def get(self, policy_id: str) -> StoredPolicy:
        return _get(self._s.policies, policy_id, f"approval policy {policy_id} not found")

    async def by_name(self, org_id: str, name: str) -> StoredPolicy:
        for policy in self._s.policies.values():
            if policy.org_id == org_id and policy.name == name:
                return policy
        raise NotFound(f"approval policy {name} not found")

    async def update(self, policy: StoredPolicy) -> None:
        await self.get(policy.id)
        self._check_name(policy)
        self._s.policies[policy.id] = policy

    async def delete(self, policy_id: str) -> None:
        await self.get(policy_id)
        del self._s.policies[policy_id]

    async def of_org(self, org_id: str) -> builtins.list[StoredPolicy]:
        return _sorted((p for p in self._s.policies.values() if p.org_id == org_id),
                       lambda p: (p.name, p.id))

    async def settings(self, org_id: str) -> ApprovalSettings:
        return self._s.approval_settings.get(org_id) or ApprovalSettings(org_id=org_id)

    async def save_settings(self, settings: ApprovalSettings) -> None:
        self._s.approval_settings[settings.org_id] = settings


class InMemoryWebhookDeliveryRepository(_Repository):
    async def add(self, delivery: WebhookDelivery) -> None:
        if delivery.id in self._s.webhooks:
            raise Conflict(f"webhook delivery {delivery.id} already exists")
        self._s.webhooks[delivery.id] = delivery

    async def get(self, delivery_id: str) -> WebhookDelivery:
        return _get(self._s.webhooks, delivery_id, f"webhook delivery {delivery_id} not found")

    async def of_approval(self, approval_id: str) -> builtins.list[WebhookDelivery]:
        return _sorted((d for d in self._s.webhooks.values() if d.approval_id == approval_id),
                       lambda d: (d.created_at, d.id))

    async def claim(self, at: datetime, until: datetime, token: str, limit: int = 20
                    ) -> builtins.list[WebhookDelivery]:
        check_limit(limit)
        due = _sorted((d for d in self._s.webhooks.values()
                       if d.status is DeliveryStatus.PENDING and d.next_attempt_at <= at
                       and (d.lease_until is None or d.lease_until <= at)),
                      lambda d: (d.next_attempt_at, d.id))[:limit]
        claimed = [attrs.evolve(d, lease_token=token, lease_until=until) for d in due]
        for d in claimed:
            self._s.webhooks[d.id] = d
        return claimed

    async def finish(self, delivery: WebhookDelivery, token: str) -> None:
        stored = await self.get(delivery.id)
        if not token or stored.lease_token != token:
            raise Conflict(f"webhook delivery {delivery.id} is no longer leased to this sender",
                           code="delivery_lease_lost")
        self._s.webhooks[delivery.id] = delivery

    async def list(self, flt: WebhookDeliveryFilter, *, limit: int = 50,
                   cursor: str | None = None) -> Page[WebhookDelivery]:
        def wanted(d: WebhookDelivery) -> bool:
            return ((flt.org_id is None or d.org_id == flt.org_id)
                    and (flt.approval_id is None or d.approval_id == flt.approval_id)
                    and (flt.status is None or d.status is flt.status))

        return newest_first(self._s.webhooks.values(), wanted, limit, cursor)

    async def update(self, delivery: WebhookDelivery, *, expected: DeliveryStatus) -> None:
        stored = await self.get(delivery.id)
        if stored.status is not expected:
            raise Conflict(f"webhook delivery {delivery.id} is {stored.status.value}, "
                           f"not {expected.value}", code="delivery_changed")
        self._s.webhooks[delivery.id] = delivery

    async def purge(self, finished_before: datetime, limit: int = 500) -> int:
        check_limit(limit)
        old = [d.id for d in self._s.webhooks.values()
               if d.status is not DeliveryStatus.PENDING and d.finished_at is not None
               and d.finished_at < finished_before][:limit]
        for delivery_id in old:
            del self._s.webhooks[delivery_id]
        return len(old)
