"""The platform data on SQL: ``SqlUnitOfWork`` and its repositories, one transaction per unit."""

from __future__ import annotations

import asyncio
import builtins
import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import CursorResult, Engine, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from adapters.sql import mapping as m
from adapters.sql import tables as t
from adapters.sql.audit import SqlAuditChain, SqlAuditOutboxWriter
from adapters.sql.engine import (
    SQLITE_BEGIN,
    WriteGate,
    store_name,
    translate_errors,
    write_gate,
)
from adapters.sql.mapping import MAX_PAGE, check_limit
from adapters.sql.queue import enqueue_statement, enqueued, take_message
from domain.approvals import Approval, ApprovalSettings, ApprovalStatus, StoredPolicy
from domain.automations import Run, RunStatus
from domain.errors import Conflict, FieldError, Invalid, NotFound, Unavailable
from domain.orgs import Invitation, InvitationStatus, Membership, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Role
from domain.ports import (
    ApprovalFilter,
    ApprovalRepository,
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
    UnitOfWorkFactory,
    UserRepository,
    WebhookDeliveryFilter,
    WebhookDeliveryRepository,
    WorkerRepository,
)
from domain.templates import (
    Template,
    TemplateGrant,
    TemplateInvitation,
    TemplateVersion,
)
from domain.tokens import WorkerToken
from domain.users import CodePurpose, MfaEnrolment, OneTimeCode, User
from domain.webhooks import DeliveryStatus, WebhookDelivery
from domain.workers import Worker


def unit_of_work_factory(engine: AsyncEngine, *, audit_outbox: bool = False,
                         enqueue: bool = False) -> UnitOfWorkFactory:
    """Units of work over ``engine``, typed as the port (mypy checks the adapter against it).

    Their audit events are chained into the SQL audit log in the unit's transaction, or with
    ``audit_outbox`` (the audit log is another store) wait in the audit outbox. ``enqueue``:
    the run queues are the SQL queue on this same database (``adapters.sql.queue``), so the
    outbox puts each message straight onto its queue in the unit's transaction.
    """
    return lambda: SqlUnitOfWork(engine, audit_outbox=audit_outbox, enqueue=enqueue)


# Per engine, what its units of work name it in errors and its write gate.
_engines: weakref.WeakKeyDictionary[Engine, tuple[str, WriteGate | None]] = (
    weakref.WeakKeyDictionary())


class SqlUnitOfWork:
    """One database transaction; leaving without ``commit`` rolls it back.

    On SQLite the transaction holds this process's write gate from its first statement until
    it ends (see ``WriteGate``), as it holds SQLite's write lock.
    """

    def __init__(self, engine: AsyncEngine, *, audit_outbox: bool = False,
                 enqueue: bool = False) -> None:
        self._engine = engine
        known = _engines.get(engine.sync_engine)
        if known is None:
            known = _engines[engine.sync_engine] = (store_name(engine.url), write_gate(engine))
        self.store, self._gate = known
        self._conn: AsyncConnection | None = None
        self._held: asyncio.Lock | None = None
        # Topics this transaction put messages on, to wake their pulls once it commits.
        self.enqueued: set[str] = set()
        self.users: UserRepository = SqlUserRepository(self)
        self.orgs: OrgRepository = SqlOrgRepository(self)
        self.roles: RoleRepository = SqlRoleRepository(self)
        self.tokens: TokenRepository = SqlTokenRepository(self)
        self.mfa: MfaRepository = SqlMfaRepository(self)
        self.codes: CodeRepository = SqlCodeRepository(self)
        self.invitations: InvitationRepository = SqlInvitationRepository(self)
        self.outbox: OutboxRepository = (
            SqlEnqueuingOutboxRepository(self) if enqueue else SqlOutboxRepository(self))
        self.templates: TemplateRepository = SqlTemplateRepository(self)
        self.runs: RunRepository = SqlRunRepository(self)
        self.workers: WorkerRepository = SqlWorkerRepository(self)
        self.approvals: ApprovalRepository = SqlApprovalRepository(self)
        self.policies: PolicyRepository = SqlPolicyRepository(self)
        self.webhooks: WebhookDeliveryRepository = SqlWebhookDeliveryRepository(self)
        self.audit: AuditRecorder = (SqlAuditOutboxWriter(self.execute) if audit_outbox
                                     else SqlAuditChain(self.execute, self.store))
        self.queues: StoreQueues | None = SqlStoreQueues(self) if enqueue else None

    async def __aenter__(self) -> SqlUnitOfWork:
        if self._conn is not None:
            raise RuntimeError("this unit of work is already open")
        with translate_errors(self.store):
            conn = await self._engine.connect()
            if self._gate is not None:
                # Units of work mostly read then write: on SQLite they take the write lock at
                # BEGIN, so they queue behind each other instead of failing on upgrade.
                conn = await conn.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        self._conn = conn
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc_value: BaseException | None, tb: TracebackType | None) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            with translate_errors(self.store):
                await conn.rollback()
                await conn.close()
        except Unavailable:
            # A unit leaving on an error keeps that error; the lost connection is secondary.
            if exc_value is None:
                raise
        finally:
            self._let_go()

    async def commit(self) -> None:
        # Taken before ``_let_go`` forgets them: the commit wakes the pulls of these topics.
        topics = self.enqueued
        try:
            with translate_errors(self.store):
                await self.connection.commit()
        finally:
            self._let_go()
        for topic in sorted(topics):
            await enqueued(self._engine, topic)

    async def rollback(self) -> None:
        try:
            with translate_errors(self.store):
                await self.connection.rollback()
        finally:
            self._let_go()

    def _let_go(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()
        self.enqueued = set()

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def connection(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("use the unit of work inside 'async with'")
        return self._conn

    async def execute(self, stmt: Executable,
                      params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
                      *, conflict: str | None = None) -> CursorResult[Any]:
        """Run ``stmt`` in the transaction; an integrity error becomes ``Conflict(conflict)``."""
        conn = self.connection
        if self._gate is not None and self._held is None:
            # The first statement begins the transaction (and the next one after a commit).
            self._held = await self._gate.acquire()
        try:
            with translate_errors(self.store):
                if params is None:
                    return await conn.execute(stmt)
                return await conn.execute(stmt, params)
        except Conflict as e:
            if conflict is None:
                raise
            raise Conflict(conflict) from e.__cause__

    async def rows(self, stmt: Executable, params: Mapping[str, Any] | None = None
                   ) -> builtins.list[RowMapping]:
        return builtins.list((await self.execute(stmt, params)).mappings().all())

    async def one(self, stmt: Executable, missing: str,
                  params: Mapping[str, Any] | None = None) -> RowMapping:
        row = (await self.execute(stmt, params)).mappings().first()
        if row is None:
            raise NotFound(missing)
        return row

    async def exists(self, stmt: Executable) -> bool:
        return (await self.execute(stmt)).first() is not None


class _Repository:
    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow


@functools.cache
def _where(table: sa.Table, *columns: str) -> sa.Select[Any]:
    """``SELECT * FROM table WHERE column = :column AND ...``, built once per shape: the
    values come as parameters (building a statement costs more than running it)."""
    return sa.select(table).where(*(table.c[name] == sa.bindparam(name) for name in columns))


class SqlUserRepository(_Repository):
    async def add(self, user: User) -> None:
        await self._uow.execute(sa.insert(t.users).values(m.user_row(user)),
                                conflict=f"user {user.id} or email {user.email} already exists")

    async def get(self, user_id: str) -> User:
        return m.user_of(await self._uow.one(
            sa.select(t.users).where(t.users.c.id == user_id), f"user {user_id} not found"))

    async def by_email(self, email: str) -> User:
        return m.user_of(await self._uow.one(
            sa.select(t.users).where(t.users.c.email_key == email.lower()),
            f"no user has email {email}"))

    async def update(self, user: User) -> None:
        result = await self._uow.execute(
            sa.update(t.users).where(t.users.c.id == user.id).values(m.user_row(user)),
            conflict=f"email {user.email} is taken")
        if result.rowcount == 0:
            raise NotFound(f"user {user.id} not found")


# By id or code in one statement; an id wins over another org's code.
_ORG_BY_REF = (
    sa.select(t.orgs)
    .where(sa.or_(t.orgs.c.id == sa.bindparam("ref"), t.orgs.c.code_key == sa.bindparam("key")))
    .order_by(sa.case((t.orgs.c.id == sa.bindparam("ref"), 0), else_=1)).limit(1))
# The org as ``_ORG_BY_REF`` finds it, with the membership of user ``user`` (NULLs when none).
_MEMBER_COLUMNS = ("org_id", "user_id", "type", "joined_at")
_ORG_MEMBER_BY_REF = (
    _ORG_BY_REF.add_columns(*(t.memberships.c[name].label(f"member_{name}")
                              for name in _MEMBER_COLUMNS))
    .outerjoin(t.memberships, sa.and_(t.memberships.c.org_id == t.orgs.c.id,
                                      t.memberships.c.user_id == sa.bindparam("user"))))
_ORG_LOCK = sa.select(t.orgs.c.id).where(t.orgs.c.id == sa.bindparam("id")).with_for_update()


class SqlOrgRepository(_Repository):
    async def add(self, org: Organisation) -> None:
        await self._uow.execute(sa.insert(t.orgs).values(m.org_row(org)),
                                conflict=f"organisation {org.id} or code {org.code} already exists")

    async def get(self, org_id: str) -> Organisation:
        return m.org_of(await self._uow.one(
            _where(t.orgs, "id"), f"organisation {org_id} not found", {"id": org_id}))

    async def by_code(self, code: str) -> Organisation:
        return m.org_of(await self._uow.one(
            _where(t.orgs, "code_key"), f"no organisation has code {code}",
            {"code_key": code.lower()}))

    async def lock(self, org_id: str) -> None:
        # MySQL: the org's row, locked for update (reads after it see what others committed:
        # READ COMMITTED). SQLite: the unit of work holds the database's write lock already.
        await self._uow.one(_ORG_LOCK, f"organisation {org_id} not found", {"id": org_id})

    async def find(self, ref: str) -> Organisation:
        return m.org_of(await self._uow.one(
            _ORG_BY_REF, f"organisation {ref} not found", {"ref": ref, "key": ref.lower()}))

    async def find_member(self, ref: str, user_id: str) -> tuple[Organisation, Membership]:
        row = await self._uow.one(_ORG_MEMBER_BY_REF, f"organisation {ref} not found",
                                  {"ref": ref, "key": ref.lower(), "user": user_id})
        if row["member_user_id"] is None:
            raise NotFound(f"user {user_id} is not a member of organisation {ref}")
        return m.org_of(row), m.membership_of(
            {name: row[f"member_{name}"] for name in _MEMBER_COLUMNS})

    async def delete(self, org_id: str) -> None:
        # Members, roles (with grants and assignments), tokens (with their role assignments)
        # and invitations go by ON DELETE CASCADE.
        result = await self._uow.execute(sa.delete(t.orgs).where(t.orgs.c.id == org_id))
        if result.rowcount == 0:
            raise NotFound(f"organisation {org_id} not found")

    async def of_user(self, user_id: str) -> list[Organisation]:
        rows = await self._uow.rows(
            sa.select(t.orgs).join(t.memberships, t.memberships.c.org_id == t.orgs.c.id)
            .where(t.memberships.c.user_id == user_id).order_by(t.orgs.c.name, t.orgs.c.id))
        return [m.org_of(r) for r in rows]

    async def add_member(self, membership: Membership) -> None:
        await self.get(membership.org_id)
        await self._uow.users.get(membership.user_id)
        await self._uow.execute(
            sa.insert(t.memberships).values(m.membership_row(membership)),
            conflict=f"user {membership.user_id} is already a member of {membership.org_id}")

    async def member(self, org_id: str, user_id: str) -> Membership:
        return m.membership_of(await self._uow.one(
            _where(t.memberships, "org_id", "user_id"),
            f"user {user_id} is not a member of organisation {org_id}",
            {"org_id": org_id, "user_id": user_id}))

    async def update_member(self, membership: Membership) -> None:
        c = t.memberships.c
        result = await self._uow.execute(
            sa.update(t.memberships)
            .where(c.org_id == membership.org_id, c.user_id == membership.user_id)
            .values(type=membership.type.value, joined_at=membership.joined_at))
        if result.rowcount == 0:
            raise NotFound(f"user {membership.user_id} is not a member of {membership.org_id}")

    async def remove_member(self, org_id: str, user_id: str) -> None:
        c = t.memberships.c
        result = await self._uow.execute(
            sa.delete(t.memberships).where(c.org_id == org_id, c.user_id == user_id))
        if result.rowcount == 0:
            raise NotFound(f"user {user_id} is not a member of organisation {org_id}")

    async def members(self, org_id: str) -> list[Membership]:
        c = t.memberships.c
        rows = await self._uow.rows(
            sa.select(t.memberships).where(c.org_id == org_id).order_by(c.joined_at, c.user_id))
        return [m.membership_of(r) for r in rows]


# A member's roles with their grants in one statement: a row per grant (one with no grant
# columns for a role that has none).
_ROLES_OF_MEMBER = (
    sa.select(t.roles, t.role_grants.c.resource, t.role_grants.c.allow_mask,
              t.role_grants.c.deny_mask)
    .select_from(t.roles.join(t.role_assignments, t.role_assignments.c.role_id == t.roles.c.id)
                 .outerjoin(t.role_grants, t.role_grants.c.role_id == t.roles.c.id))
    .where(t.role_assignments.c.org_id == sa.bindparam("org_id"),
           t.role_assignments.c.user_id == sa.bindparam("user_id"))
    .order_by(t.roles.c.name, t.roles.c.id, t.role_grants.c.resource))
_GRANTS_OF_ROLES = (
    sa.select(t.role_grants).where(t.role_grants.c.role_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(t.role_grants.c.resource))


class SqlRoleRepository(_Repository):
    async def add(self, role: Role) -> None:
        await self._uow.orgs.get(role.org_id)
        await self._uow.execute(
            sa.insert(t.roles).values(m.role_row(role)),
            conflict=f"role {role.id} or a role named {role.name!r} already exists")
        await self._insert_grants(role)

    async def _insert_grants(self, role: Role) -> None:
        if role.grants:
            await self._uow.execute(sa.insert(t.role_grants), m.grant_rows(role))

    async def _with_grants(self, rows: list[RowMapping]) -> list[Role]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        grants: dict[str, list[RowMapping]] = {i: [] for i in ids}
        for g in await self._uow.rows(_GRANTS_OF_ROLES, {"ids": ids}):
            grants[g["role_id"]].append(g)
        return [m.role_of(r, grants[r["id"]]) for r in rows]

    async def get(self, role_id: str) -> Role:
        row = await self._uow.one(sa.select(t.roles).where(t.roles.c.id == role_id),
                                  f"role {role_id} not found")
        return (await self._with_grants([row]))[0]

    async def update(self, role: Role) -> None:
        result = await self._uow.execute(
            sa.update(t.roles).where(t.roles.c.id == role.id)
            .values(name=role.name, builtin=role.builtin),
            conflict=f"the organisation already has a role named {role.name!r}")
        if result.rowcount == 0:
            raise NotFound(f"role {role.id} not found")
        await self._uow.execute(sa.delete(t.role_grants).where(t.role_grants.c.role_id == role.id))
        await self._insert_grants(role)

    async def delete(self, role_id: str) -> None:
        result = await self._uow.execute(sa.delete(t.roles).where(t.roles.c.id == role_id))
        if result.rowcount == 0:
            raise NotFound(f"role {role_id} not found")

    async def of_org(self, org_id: str) -> list[Role]:
        return await self._with_grants(await self._uow.rows(
            sa.select(t.roles).where(t.roles.c.org_id == org_id)
            .order_by(t.roles.c.name, t.roles.c.id)))

    async def assign(self, org_id: str, user_id: str, role_id: str) -> None:
        await self._uow.orgs.member(org_id, user_id)
        role = await self.get(role_id)
        if role.org_id != org_id:
            raise NotFound(f"organisation {org_id} has no role {role_id}")
        a = t.role_assignments.c
        if not await self._uow.exists(sa.select(a.role_id).where(
                a.org_id == org_id, a.user_id == user_id, a.role_id == role_id)):
            await self._uow.execute(sa.insert(t.role_assignments).values(
                org_id=org_id, user_id=user_id, role_id=role_id))

    async def unassign(self, org_id: str, user_id: str, role_id: str) -> None:
        a = t.role_assignments.c
        await self._uow.execute(sa.delete(t.role_assignments).where(
            a.org_id == org_id, a.user_id == user_id, a.role_id == role_id))

    async def of_member(self, org_id: str, user_id: str) -> list[Role]:
        roles: dict[str, tuple[RowMapping, list[RowMapping]]] = {}
        for row in await self._uow.rows(_ROLES_OF_MEMBER, {"org_id": org_id, "user_id": user_id}):
            _, grants = roles.setdefault(row["id"], (row, []))
            if row["resource"] is not None:
                grants.append(row)
        return [m.role_of(role, grants) for role, grants in roles.values()]

    async def assign_token(self, token_id: str, role_id: str) -> None:
        token = await self._uow.tokens.get(token_id)
        role = await self.get(role_id)
        if role.org_id != token.org_id:
            raise Invalid(f"role {role_id} and token {token_id} belong to different organisations",
                          errors=(FieldError("role_id", "is not a role of the token's org"),))
        c = t.token_roles.c
        if not await self._uow.exists(sa.select(c.role_id).where(
                c.token_id == token_id, c.role_id == role_id)):
            await self._uow.execute(sa.insert(t.token_roles).values(
                token_id=token_id, role_id=role_id))

    async def unassign_token(self, token_id: str, role_id: str) -> None:
        c = t.token_roles.c
        await self._uow.execute(sa.delete(t.token_roles).where(
            c.token_id == token_id, c.role_id == role_id))

    async def of_token(self, token_id: str) -> list[Role]:
        c = t.token_roles.c
        return await self._with_grants(await self._uow.rows(
            sa.select(t.roles).join(t.token_roles, c.role_id == t.roles.c.id)
            .where(c.token_id == token_id).order_by(t.roles.c.name, t.roles.c.id)))


class SqlTokenRepository(_Repository):
    async def add(self, token: WorkerToken) -> None:
        await self._uow.orgs.get(token.org_id)
        await self._uow.execute(sa.insert(t.worker_tokens).values(m.token_row(token)),
                                conflict=f"token {token.id} already exists")

    async def get(self, token_id: str) -> WorkerToken:
        return m.token_of(await self._uow.one(
            sa.select(t.worker_tokens).where(t.worker_tokens.c.id == token_id),
            f"token {token_id} not found"))

    async def update(self, token: WorkerToken) -> None:
        result = await self._uow.execute(
            sa.update(t.worker_tokens).where(t.worker_tokens.c.id == token.id)
            .values(m.token_row(token)))
        if result.rowcount == 0:
            raise NotFound(f"token {token.id} not found")

    async def of_org(self, org_id: str) -> list[WorkerToken]:
        c = t.worker_tokens.c
        rows = await self._uow.rows(
            sa.select(t.worker_tokens).where(c.org_id == org_id).order_by(c.name, c.id))
        return [m.token_of(r) for r in rows]


class SqlMfaRepository(_Repository):
    async def add(self, enrolment: MfaEnrolment) -> None:
        await self._uow.users.get(enrolment.user_id)
        c = t.user_mfa.c
        row = (await self._uow.execute(
            sa.select(c.confirmed_at).where(c.user_id == enrolment.user_id))).first()
        if row is None:
            await self._uow.execute(
                sa.insert(t.user_mfa).values(m.mfa_row(enrolment)),
                conflict=f"user {enrolment.user_id} enrolled concurrently")
        elif row[0] is None:
            await self._uow.execute(sa.update(t.user_mfa).where(
                c.user_id == enrolment.user_id).values(m.mfa_row(enrolment)))
        else:
            raise Conflict(f"user {enrolment.user_id} already has multi-factor authentication")

    async def of_user(self, user_id: str) -> MfaEnrolment:
        return m.mfa_of(await self._uow.one(
            sa.select(t.user_mfa).where(t.user_mfa.c.user_id == user_id),
            f"user {user_id} has no multi-factor enrolment"))

    async def update(self, enrolment: MfaEnrolment) -> None:
        result = await self._uow.execute(
            sa.update(t.user_mfa).where(t.user_mfa.c.user_id == enrolment.user_id)
            .values(m.mfa_row(enrolment)))
        if result.rowcount == 0:
            raise NotFound(f"user {enrolment.user_id} has no multi-factor enrolment")

    async def delete(self, user_id: str) -> None:
        result = await self._uow.execute(
            sa.delete(t.user_mfa).where(t.user_mfa.c.user_id == user_id))
        if result.rowcount == 0:
            raise NotFound(f"user {user_id} has no multi-factor enrolment")
        await self._uow.execute(sa.delete(t.user_recovery_codes).where(
            t.user_recovery_codes.c.user_id == user_id))

    async def set_recovery_codes(self, user_id: str, code_hashes: Sequence[str]) -> None:
        await self._uow.users.get(user_id)
        await self._uow.execute(sa.delete(t.user_recovery_codes).where(
            t.user_recovery_codes.c.user_id == user_id))
        hashes = builtins.list(dict.fromkeys(code_hashes))
        if hashes:
            await self._uow.execute(sa.insert(t.user_recovery_codes), [
                {"user_id": user_id, "code_hash": h, "used_at": None} for h in hashes])

    async def use_recovery_code(self, user_id: str, code_hash: str, at: datetime) -> bool:
        c = t.user_recovery_codes.c
        # One conditional statement: of two concurrent uses of a code, only one marks it.
        result = await self._uow.execute(
            sa.update(t.user_recovery_codes)
            .where(c.user_id == user_id, c.code_hash == code_hash, c.used_at.is_(None))
            .values(used_at=at))
        return bool(result.rowcount)

    async def recovery_codes_left(self, user_id: str) -> int:
        c = t.user_recovery_codes.c
        result = await self._uow.execute(
            sa.select(sa.func.count()).where(c.user_id == user_id, c.used_at.is_(None)))
        return int(result.scalar_one())


class SqlCodeRepository(_Repository):
    async def add(self, code: OneTimeCode) -> None:
        await self._uow.users.get(code.user_id)
        await self._uow.execute(sa.insert(t.user_codes).values(m.code_row(code)),
                                conflict=f"code {code.id} already exists")

    async def by_hash(self, purpose: CodePurpose, code_hash: str) -> OneTimeCode:
        c = t.user_codes.c
        # Hashes are not unique; should two codes share one, the newer wins.
        return m.code_of(await self._uow.one(
            sa.select(t.user_codes).where(c.purpose == purpose.value, c.code_hash == code_hash)
            .order_by(c.created_at.desc(), c.id.desc()).limit(1),
            f"no {purpose.value} code matches"))

    async def update(self, code: OneTimeCode) -> None:
        result = await self._uow.execute(
            sa.update(t.user_codes).where(t.user_codes.c.id == code.id).values(m.code_row(code)))
        if result.rowcount == 0:
            raise NotFound(f"code {code.id} not found")

    async def retire(self, user_id: str, purpose: CodePurpose, at: datetime) -> None:
        c = t.user_codes.c
        await self._uow.execute(
            sa.update(t.user_codes)
            .where(c.user_id == user_id, c.purpose == purpose.value, c.used_at.is_(None))
            .values(used_at=at))


_I = TypeVar("_I", Invitation, TemplateInvitation)


class _Invitations(Generic[_I]):
    """The queries org and template invitations share, over one invitation table."""

    def __init__(self, uow: SqlUnitOfWork, table: sa.Table, parent: str, noun: str,
                 row_of: Callable[[_I], dict[str, Any]],
                 of_row: Callable[[RowMapping], _I]) -> None:
        self._uow, self._table, self._parent, self._noun = uow, table, parent, noun
        self._row_of: Callable[[_I], dict[str, Any]] = row_of
        self._of_row: Callable[[RowMapping], _I] = of_row

    async def add(self, invitation: _I, conflict: str) -> None:
        await self._uow.execute(sa.insert(self._table).values(self._row_of(invitation)),
                                conflict=conflict)

    async def get(self, invitation_id: str) -> _I:
        return self._of_row(await self._uow.one(
            sa.select(self._table).where(self._table.c.id == invitation_id),
            f"{self._noun} {invitation_id} not found"))

    async def by_code_hash(self, code_hash: str) -> _I:
        c = self._table.c
        # Hashes are not unique; should two invitations share one, the newer wins.
        return self._of_row(await self._uow.one(
            sa.select(self._table).where(c.code_hash == code_hash)
            .order_by(c.created_at.desc(), c.id.desc()).limit(1),
            f"no {self._noun} matches the code"))

    async def pending_for(self, email: str) -> builtins.list[_I]:
        c = self._table.c
        rows = await self._uow.rows(
            sa.select(self._table)
            .where(c.email_key == email.lower(), c.status == InvitationStatus.PENDING.value)
            .order_by(c.created_at, c.id))
        return [self._of_row(r) for r in rows]

    async def update(self, invitation: _I, conflict: str) -> None:
        row = self._row_of(invitation)
        del row[self._parent]  # an invitation never moves to another org or template
        result = await self._uow.execute(
            sa.update(self._table).where(self._table.c.id == invitation.id).values(row),
            conflict=conflict)
        if result.rowcount == 0:
            raise NotFound(f"{self._noun} {invitation.id} not found")


class SqlInvitationRepository(_Repository):
    def __init__(self, uow: SqlUnitOfWork) -> None:
        super().__init__(uow)
        self._invitations = _Invitations[Invitation](
            uow, t.org_invitations, "org_id", "invitation", m.invitation_row, m.invitation_of)

    async def add(self, invitation: Invitation) -> None:
        await self._uow.orgs.get(invitation.org_id)
        await self._invitations.add(
            invitation, f"invitation {invitation.id} or a pending invitation of "
                        f"{invitation.email} to {invitation.org_id} already exists")

    async def get(self, invitation_id: str) -> Invitation:
        return await self._invitations.get(invitation_id)

    async def by_code_hash(self, code_hash: str) -> Invitation:
        return await self._invitations.by_code_hash(code_hash)

    async def for_email(self, email: str) -> builtins.list[Invitation]:
        return await self._invitations.pending_for(email)

    async def of_org(self, org_id: str) -> builtins.list[Invitation]:
        c = t.org_invitations.c
        rows = await self._uow.rows(
            sa.select(t.org_invitations).where(c.org_id == org_id)
            .order_by(c.created_at, c.id))
        return [m.invitation_of(r) for r in rows]

    async def update(self, invitation: Invitation) -> None:
        await self._invitations.update(
            invitation, f"a pending invitation of {invitation.email} to the org already exists")


# The template whose id is ``ref``, else the one named ``ref`` of the owner ``owner_key``.
_TEMPLATE_IN_ORG = (
    sa.select(t.templates)
    .where(sa.or_(t.templates.c.id == sa.bindparam("ref"),
                  sa.and_(t.templates.c.owner_key == sa.bindparam("owner_key"),
                          t.templates.c.name == sa.bindparam("ref"))))
    .order_by(sa.case((t.templates.c.id == sa.bindparam("ref"), 0), else_=1)).limit(1))


class SqlTemplateRepository(_Repository):
    def __init__(self, uow: SqlUnitOfWork) -> None:
        super().__init__(uow)
        self._invitations = _Invitations[TemplateInvitation](
            uow, t.template_invitations, "template_id", "template invitation",
            m.template_invitation_row, m.template_invitation_of)

    async def add(self, template: Template, first: TemplateVersion) -> None:
        await self._uow.execute(
            sa.insert(t.templates).values(m.template_row(template)),
            conflict=f"template {template.id} or one named {template.name!r} already exists")
        await self.add_version(first)

    async def add_version(self, version: TemplateVersion) -> None:
        await self.get(version.template_id)
        await self._uow.execute(
            sa.insert(t.template_versions).values(m.version_row(version)),
            conflict=f"template {version.template_id} already has version {version.version}")

    async def get(self, template_id: str) -> Template:
        return m.template_of(await self._uow.one(
            _where(t.templates, "id"), f"template {template_id} not found", {"id": template_id}))

    async def by_name(self, name: str, *, org_id: str | None = None,
                      owner_id: str | None = None) -> Template:
        return m.template_of(await self._uow.one(
            _where(t.templates, "owner_key", "name"), f"template {name!r} not found",
            {"owner_key": m.owner_key(org_id, owner_id), "name": name}))

    async def in_org(self, ref: str, org_id: str) -> Template:
        return m.template_of(await self._uow.one(
            _TEMPLATE_IN_ORG, f"template {ref!r} not found",
            {"ref": ref, "owner_key": m.owner_key(org_id, None)}))

    async def update(self, template: Template) -> None:
        result = await self._uow.execute(
            sa.update(t.templates).where(t.templates.c.id == template.id)
            .values(m.template_row(template)),
            conflict=f"a template named {template.name!r} already exists")
        if result.rowcount == 0:
            raise NotFound(f"template {template.id} not found")

    async def delete(self, template_id: str) -> None:
        # Versions, grants and invitations go by ON DELETE CASCADE.
        result = await self._uow.execute(
            sa.delete(t.templates).where(t.templates.c.id == template_id))
        if result.rowcount == 0:
            raise NotFound(f"template {template_id} not found")

    async def list(self, *, org_id: str | None = None, owner_id: str | None = None
                   ) -> builtins.list[Template]:
        c = t.templates.c
        stmt = sa.select(t.templates).order_by(c.name, c.id)
        if org_id is not None or owner_id is not None:
            stmt = stmt.where(c.owner_key == m.owner_key(org_id, owner_id))
        return [m.template_of(r) for r in await self._uow.rows(stmt)]

    async def versions(self, template_id: str) -> builtins.list[TemplateVersion]:
        c = t.template_versions.c
        rows = await self._uow.rows(
            sa.select(t.template_versions).where(c.template_id == template_id)
            .order_by(c.version))
        return [m.version_of(r) for r in rows]

    async def version(self, template_id: str, version: int) -> TemplateVersion:
        return m.version_of(await self._uow.one(
            _where(t.template_versions, "template_id", "version"),
            f"template {template_id} has no version {version}",
            {"template_id": template_id, "version": version}))

    async def grant(self, grant: TemplateGrant) -> None:
        await self.get(grant.template_id)
        c = t.template_grants.c
        row = m.template_grant_row(grant)
        result = await self._uow.execute(
            sa.update(t.template_grants)
            .where(c.template_id == grant.template_id, c.user_id == grant.user_id).values(row))
        if not result.rowcount:
            await self._uow.execute(
                sa.insert(t.template_grants).values(row),
                conflict=f"user {grant.user_id} was granted template {grant.template_id} "
                         "concurrently")

    async def revoke(self, template_id: str, user_id: str) -> None:
        c = t.template_grants.c
        result = await self._uow.execute(sa.delete(t.template_grants).where(
            c.template_id == template_id, c.user_id == user_id))
        if result.rowcount == 0:
            raise NotFound(f"user {user_id} has no grant on template {template_id}")

    async def grants(self, template_id: str) -> builtins.list[TemplateGrant]:
        c = t.template_grants.c
        rows = await self._uow.rows(
            sa.select(t.template_grants).where(c.template_id == template_id)
            .order_by(c.granted_at, c.user_id))
        return [m.template_grant_of(r) for r in rows]

    async def grant_of(self, template_id: str, user_id: str) -> TemplateGrant:
        c = t.template_grants.c
        return m.template_grant_of(await self._uow.one(
            sa.select(t.template_grants).where(c.template_id == template_id,
                                               c.user_id == user_id),
            f"user {user_id} has no grant on template {template_id}"))

    async def shared_with(self, user_id: str) -> builtins.list[Template]:
        c, g = t.templates.c, t.template_grants.c
        granted = sa.select(g.template_id).where(g.user_id == user_id)
        rows = await self._uow.rows(
            sa.select(t.templates)
            .where(c.org_id.is_(None), sa.or_(c.owner_id == user_id, c.id.in_(granted)))
            .order_by(c.name, c.id))
        return [m.template_of(r) for r in rows]

    async def add_invitation(self, invitation: TemplateInvitation) -> None:
        await self.get(invitation.template_id)
        await self._invitations.add(
            invitation, f"invitation {invitation.id} or a pending invitation of "
                        f"{invitation.email} to template {invitation.template_id} already exists")

    async def invitation(self, invitation_id: str) -> TemplateInvitation:
        return await self._invitations.get(invitation_id)

    async def invitation_by_code_hash(self, code_hash: str) -> TemplateInvitation:
        return await self._invitations.by_code_hash(code_hash)

    async def invitations_for(self, email: str) -> builtins.list[TemplateInvitation]:
        return await self._invitations.pending_for(email)

    async def update_invitation(self, invitation: TemplateInvitation) -> None:
        await self._invitations.update(
            invitation,
            f"a pending invitation of {invitation.email} to the template already exists")


class SqlOutboxRepository(_Repository):
    async def add(self, message: OutboxMessage) -> None:
        await self._uow.execute(sa.insert(t.outbox).values(m.outbox_row(message)),
                                conflict=f"outbox message {message.id} already exists")

    async def pending(self, limit: int = 100) -> builtins.list[OutboxMessage]:
        check_limit(limit)
        c = t.outbox.c
        rows = await self._uow.rows(
            sa.select(t.outbox).where(c.published_at.is_(None))
            .order_by(c.created_at, c.id).limit(limit))
        return [m.outbox_of(r) for r in rows]

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        c = t.outbox.c
        wanted = builtins.list(dict.fromkeys(ids))
        # In slices, so a large batch stays below the backends' limits on bound parameters.
        for start in range(0, len(wanted), MAX_PAGE):
            await self._uow.execute(
                sa.update(t.outbox)
                .where(c.id.in_(wanted[start:start + MAX_PAGE]), c.published_at.is_(None))
                .values(published_at=at))


class SqlEnqueuingOutboxRepository(SqlOutboxRepository):
    """The outbox where the run queues live in this database: ``add`` puts the message on its
    queue in the caller's transaction, so it is delivered the moment the change commits and
    no relay has to publish it. ``pending`` still lists what other processes left for it."""

    async def add(self, message: OutboxMessage) -> None:
        stmt, row = enqueue_statement(message.topic, QueueMessage(message.id, message.body))
        await self._uow.execute(stmt, row, conflict=f"queue message {message.id} already exists")
        self._uow.enqueued.add(message.topic)


class SqlStoreQueues(_Repository):
    """The run queues on the SQL queue of this database, taken from in the unit of work."""

    async def take(self, topic: str) -> QueueMessage | None:
        return await take_message(self._uow.engine, self._uow.execute, topic)


@functools.cache
def _run_update(status: bool, attempts: bool) -> sa.Update:
    """The run update of this shape, built once: the row and the keys come as parameters
    (building a statement with a row's values costs more than running it)."""
    c = t.runs.c
    stmt = sa.update(t.runs).where(c.id == sa.bindparam("key_id"))
    if status:
        stmt = stmt.where(c.status == sa.bindparam("key_status"))
    if attempts:
        stmt = stmt.where(c.attempts == sa.bindparam("key_attempts"))
    return stmt


_RUN_INSERT = sa.insert(t.runs)


# Counted in ix_runs_org_status_created, up to a limit: a deep queue is not read whole.
_QUEUED_AHEAD = sa.select(sa.func.count()).select_from(
    sa.select(sa.literal(1)).select_from(t.runs).where(
        t.runs.c.org_id == sa.bindparam("org_id"), t.runs.c.status == sa.bindparam("status"),
        sa.or_(t.runs.c.created_at < sa.bindparam("created_at"),
               sa.and_(t.runs.c.created_at == sa.bindparam("created_at"),
                       t.runs.c.id < sa.bindparam("id"))))
    .limit(sa.bindparam("limit")).subquery())


class SqlRunRepository(_Repository):
    async def add(self, run: Run) -> None:
        await self._uow.execute(_RUN_INSERT, m.run_row(run),
                                conflict=f"run {run.id} already exists")

    async def get(self, run_id: str) -> Run:
        return m.run_of(await self._uow.one(
            _where(t.runs, "id"), f"run {run_id} not found", {"id": run_id}))

    async def update(self, run: Run, *, expected: RunStatus | None = None,
                     expected_attempts: int | None = None) -> None:
        c = t.runs.c
        # The checks and the write are one statement: of two writers expecting the same
        # status and attempts, the second matches no row (it waits for the first's lock and
        # then sees its commit), so two claims of one run can never both win.
        stmt = _run_update(expected is not None, expected_attempts is not None)
        params = {**m.run_state_row(run), "key_id": run.id}
        if expected is not None:
            params["key_status"] = expected.value
        if expected_attempts is not None:
            params["key_attempts"] = expected_attempts
        if (await self._uow.execute(stmt, params)).rowcount:
            return
        # A locking read sees the latest commit (a plain one would see this transaction's
        # snapshot on MySQL), so the message names what actually won.
        row = (await self._uow.execute(
            sa.select(c.status, c.attempts).where(c.id == run.id)
            .with_for_update(read=True))).mappings().first()
        if row is None:
            raise NotFound(f"run {run.id} not found")
        if expected_attempts is not None and row["attempts"] != expected_attempts:
            raise Conflict(f"run {run.id} is at attempt {row['attempts']}, "
                           f"not {expected_attempts}: its lease was lost", code="lease_lost")
        raise Conflict(f"run {run.id} is {row['status']}, not "
                       f"{expected.value if expected is not None else 'as expected'}")

    async def expired_leases(self, at: datetime, limit: int = 100) -> builtins.list[Run]:
        check_limit(limit)
        c = t.runs.c
        rows = await self._uow.rows(
            sa.select(t.runs)
            .where(c.status == RunStatus.RUNNING.value, c.lease_expires_at <= at)
            .order_by(c.lease_expires_at, c.id).limit(limit))
        return [m.run_of(r) for r in rows]

    async def count_by_status(self) -> dict[RunStatus, int]:
        # ix_runs_status answers this without reading the rows.
        result = await self._uow.execute(
            sa.select(t.runs.c.status, sa.func.count().label("runs")).group_by(t.runs.c.status))
        return {RunStatus(row["status"]): int(row["runs"]) for row in result.mappings().all()}

    async def queued_ahead(self, run: Run, limit: int) -> int:
        check_limit(limit)
        if run.org_id is None:
            return 0  # only runs of an org are queued
        result = await self._uow.execute(_QUEUED_AHEAD, {
            "org_id": run.org_id, "status": RunStatus.QUEUED.value,
            "created_at": run.created_at, "id": run.id, "limit": limit})
        return int(result.scalar_one())

    async def queued_orgs(self, limit: int = 100) -> builtins.list[str]:
        check_limit(limit)
        c = t.runs.c
        rows = await self._uow.execute(
            sa.select(c.org_id).where(c.status == RunStatus.QUEUED.value, c.org_id.is_not(None))
            .distinct().limit(limit))
        return [str(org_id) for (org_id,) in rows]

    async def list(self, flt: RunFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[Run]:
        check_limit(limit)
        c = t.runs.c
        stmt = sa.select(t.runs)
        if flt.org_id is not None:
            stmt = stmt.where(c.org_id == flt.org_id)
        if flt.template_id is not None:
            stmt = stmt.where(c.template_id == flt.template_id)
        if flt.requested_by is not None:
            stmt = stmt.where(c.requested_by == flt.requested_by)
        if flt.statuses:
            stmt = stmt.where(c.status.in_([s.value for s in flt.statuses]))
        if flt.created_after is not None:
            stmt = stmt.where(c.created_at >= flt.created_after)
        if flt.created_before is not None:
            stmt = stmt.where(c.created_at < flt.created_before)
        rows = await self._uow.rows(newest_first(stmt, c, cursor, limit))
        return newest_page([m.run_of(r) for r in rows[:limit]], more=len(rows) > limit)


_Listed = TypeVar("_Listed", Run, Approval, WebhookDelivery)


def newest_page(items: Sequence[_Listed], *, more: bool) -> Page[_Listed]:
    """A page of a ``newest_first`` listing; while ``more`` follow, its cursor names its last."""
    if not (more and items):
        return Page(tuple(items), None)
    return Page(tuple(items), m.encode_cursor(items[-1].created_at.isoformat(), items[-1].id))


def newest_first(stmt: sa.Select[Any], c: Any, cursor: str | None, limit: int
                 ) -> sa.Select[Any]:
    """``stmt`` newest first by (``created_at``, ``id``), after the row ``cursor`` names, with
    one row more than ``limit`` to tell whether another page follows."""
    if cursor is not None:
        at, item_id = m.decode_cursor(cursor, 2)
        try:
            after = datetime.fromisoformat(at)
        except (TypeError, ValueError) as e:
            raise m.bad_cursor() from e
        stmt = stmt.where(sa.or_(c.created_at < after,
                                 sa.and_(c.created_at == after, c.id < str(item_id))))
    return stmt.order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)


@functools.cache
def _worker_upsert(dialect: str) -> sa.Insert:
    """Insert a worker's row, or update every column but the id: built once per dialect."""
    names = [c.name for c in t.workers.c if c.name != "id"]
    if dialect == "sqlite":
        lite = sqlite.insert(t.workers)
        return lite.on_conflict_do_update(index_elements=[t.workers.c.id],
                                          set_={n: lite.excluded[n] for n in names})
    my = mysql.insert(t.workers)
    return my.on_duplicate_key_update({n: my.inserted[n] for n in names})


_WORKERS_OF_ORG = _where(t.workers, "org_id").order_by(t.workers.c.name, t.workers.c.id)
_WORKER_LAST_SEEN = sa.select(sa.func.max(t.workers.c.last_seen_at)).where(
    t.workers.c.org_id == sa.bindparam("org_id"))


class SqlWorkerRepository(_Repository):
    async def save(self, worker: Worker) -> None:
        # One upsert: every claim and heartbeat saves its worker.
        await self._uow.execute(_worker_upsert(self._uow.dialect), m.worker_row(worker),
                                conflict=f"worker {worker.id} could not be saved")

    async def get(self, worker_id: str) -> Worker:
        return m.worker_of(await self._uow.one(
            _where(t.workers, "id"), f"worker {worker_id} not found", {"id": worker_id}))

    async def of_org(self, org_id: str) -> builtins.list[Worker]:
        rows = await self._uow.rows(_WORKERS_OF_ORG, {"org_id": org_id})
        return [m.worker_of(r) for r in rows]

    async def last_seen(self, org_id: str) -> datetime | None:
        return cast("datetime | None", (await self._uow.execute(
            _WORKER_LAST_SEEN, {"org_id": org_id})).scalar_one())


class SqlApprovalRepository(_Repository):
    async def add(self, approval: Approval) -> None:
        await self._uow.execute(
            sa.insert(t.approvals).values(m.approval_row(approval)),
            conflict=f"approval {approval.id} (or one for run {approval.run_id}) already exists")
        await self._insert_responders(approval)

    async def _insert_responders(self, approval: Approval) -> None:
        responders = builtins.list(dict.fromkeys(approval.responders))
        if responders:
            await self._uow.execute(sa.insert(t.approval_responders),
                                    [{"approval_id": approval.id, "user_id": u}
                                     for u in responders])

    async def _with_responders(self, rows: builtins.list[RowMapping]
                               ) -> builtins.list[Approval]:
        if not rows:
            return []
        c = t.approval_responders.c
        ids = [r["id"] for r in rows]
        found: dict[str, builtins.list[str]] = {i: [] for i in ids}
        for row in await self._uow.rows(
                sa.select(c.approval_id, c.user_id).where(c.approval_id.in_(ids))
                .order_by(c.approval_id, c.user_id)):
            found[row["approval_id"]].append(row["user_id"])
        return [m.approval_of(r, tuple(found[r["id"]])) for r in rows]

    async def get(self, approval_id: str) -> Approval:
        # Read for update: answers are read-modify-write, and on MySQL (READ COMMITTED) two
        # answers at once must not both start from the same responses. SQLite ignores it;
        # its units of work are serialised already.
        row = await self._uow.one(
            sa.select(t.approvals).where(t.approvals.c.id == approval_id).with_for_update(),
            f"approval {approval_id} not found")
        return (await self._with_responders([row]))[0]

    async def of_run(self, run_id: str) -> Approval:
        row = await self._uow.one(_where(t.approvals, "run_id"),
                                  f"run {run_id} has no approval request", {"run_id": run_id})
        return (await self._with_responders([row]))[0]

    async def update(self, approval: Approval, *, expected: ApprovalStatus | None = None) -> None:
        c = t.approvals.c
        stmt = sa.update(t.approvals).where(c.id == approval.id).values(
            m.approval_row(approval))
        if expected is not None:
            stmt = stmt.where(c.status == expected.value)
        if not (await self._uow.execute(stmt)).rowcount:
            row = (await self._uow.execute(
                sa.select(c.status).where(c.id == approval.id)
                .with_for_update(read=True))).mappings().first()
            if row is None:
                raise NotFound(f"approval {approval.id} not found")
            raise Conflict(f"approval {approval.id} is {row['status']}, not "
                           f"{expected.value if expected is not None else 'as expected'}",
                           code="approval_changed")
        r = t.approval_responders.c
        await self._uow.execute(sa.delete(t.approval_responders)
                                .where(r.approval_id == approval.id))
        await self._insert_responders(approval)

    async def list(self, flt: ApprovalFilter, *, limit: int = 50, cursor: str | None = None
                   ) -> Page[Approval]:
        check_limit(limit)
        c = t.approvals.c
        stmt = sa.select(t.approvals)
        if flt.org_id is not None:
            stmt = stmt.where(c.org_id == flt.org_id)
        if flt.run_id is not None:
            stmt = stmt.where(c.run_id == flt.run_id)
        if flt.statuses:
            stmt = stmt.where(c.status.in_([s.value for s in flt.statuses]))
        if flt.decided_since is not None:
            stmt = stmt.where(c.decided_at >= flt.decided_since)
        if flt.responder_id is not None:
            r = t.approval_responders.c
            stmt = stmt.where(c.id.in_(sa.select(r.approval_id)
                                       .where(r.user_id == flt.responder_id)))
        rows = await self._uow.rows(newest_first(stmt, c, cursor, limit))
        return newest_page(await self._with_responders(rows[:limit]), more=len(rows) > limit)

    async def due(self, at: datetime, limit: int = 100) -> builtins.list[Approval]:
        check_limit(limit)
        c = t.approvals.c
        rows = await self._uow.rows(
            sa.select(t.approvals)
            .where(c.status == ApprovalStatus.PENDING.value, c.expires_at <= at)
            .order_by(c.expires_at, c.id).limit(limit))
        return await self._with_responders(rows)


class SqlPolicyRepository(_Repository):
    async def add(self, policy: StoredPolicy) -> None:
        await self._uow.execute(
            sa.insert(t.approval_policies).values(m.policy_row(policy)),
            conflict=f"the org already has an approval policy named {policy.name}")

    async def get(self, policy_id: str) -> StoredPolicy:
        return m.policy_of(await self._uow.one(
            sa.select(t.approval_policies).where(t.approval_policies.c.id == policy_id),
            f"approval policy {policy_id} not found"))

    async def by_name(self, org_id: str, name: str) -> StoredPolicy:
        c = t.approval_policies.c
        return m.policy_of(await self._uow.one(
            sa.select(t.approval_policies).where(c.org_id == org_id, c.name == name),
            f"approval policy {name} not found"))

    async def update(self, policy: StoredPolicy) -> None:
        c = t.approval_policies.c
        result = await self._uow.execute(
            sa.update(t.approval_policies).where(c.id == policy.id)
            .values(m.policy_row(policy)),
            conflict=f"the org already has an approval policy named {policy.name}")
        if not result.rowcount:
            raise NotFound(f"approval policy {policy.id} not found")

    async def delete(self, policy_id: str) -> None:
        c = t.approval_policies.c
        result = await self._uow.execute(sa.delete(t.approval_policies).where(c.id == policy_id))
        if not result.rowcount:
            raise NotFound(f"approval policy {policy_id} not found")

    async def of_org(self, org_id: str) -> builtins.list[StoredPolicy]:
        c = t.approval_policies.c
        rows = await self._uow.rows(sa.select(t.approval_policies)
                                    .where(c.org_id == org_id).order_by(c.name, c.id))
        return [m.policy_of(r) for r in rows]

    async def settings(self, org_id: str) -> ApprovalSettings:
        row = (await self._uow.execute(
            _where(t.org_approval_settings, "org_id"), {"org_id": org_id})).mappings().first()
        return ApprovalSettings(org_id=org_id) if row is None else m.settings_of(row)

    async def save_settings(self, settings: ApprovalSettings) -> None:
        c = t.org_approval_settings.c
        row = m.settings_row(settings)
        if await self._uow.exists(sa.select(c.org_id).where(c.org_id == settings.org_id)):
            await self._uow.execute(sa.update(t.org_approval_settings)
                                    .where(c.org_id == settings.org_id).values(row))
        else:
            await self._uow.execute(sa.insert(t.org_approval_settings).values(row),
                                    conflict="the org's approval settings changed meanwhile")


class SqlWebhookDeliveryRepository(_Repository):
    async def add(self, delivery: WebhookDelivery) -> None:
        await self._uow.execute(sa.insert(t.webhook_deliveries).values(m.webhook_row(delivery)),
                                conflict=f"webhook delivery {delivery.id} already exists")

    async def get(self, delivery_id: str) -> WebhookDelivery:
        c = t.webhook_deliveries.c
        return m.webhook_of(await self._uow.one(
            sa.select(t.webhook_deliveries).where(c.id == delivery_id),
            f"webhook delivery {delivery_id} not found"))

    async def of_approval(self, approval_id: str) -> builtins.list[WebhookDelivery]:
        c = t.webhook_deliveries.c
        rows = await self._uow.rows(sa.select(t.webhook_deliveries)
                                    .where(c.approval_id == approval_id)
                                    .order_by(c.created_at, c.id))
        return [m.webhook_of(r) for r in rows]

    async def claim(self, at: datetime, until: datetime, token: str, limit: int = 20
                    ) -> builtins.list[WebhookDelivery]:
        check_limit(limit)
        c = t.webhook_deliveries.c
        free = sa.or_(c.lease_until.is_(None), c.lease_until <= at)
        due = (c.status == DeliveryStatus.PENDING.value, c.next_attempt_at <= at, free)
        candidates = [r["id"] for r in await self._uow.rows(
            sa.select(c.id).where(*due).order_by(c.next_attempt_at, c.id).limit(limit))]
        claimed: builtins.list[str] = []
        for delivery_id in candidates:
            # Conditional: a row another sender leased since the select is left to it.
            result = await self._uow.execute(
                sa.update(t.webhook_deliveries).where(c.id == delivery_id, *due)
                .values(lease_token=token, lease_until=until))
            if result.rowcount:
                claimed.append(delivery_id)
        if not claimed:
            return []
        rows = await self._uow.rows(sa.select(t.webhook_deliveries)
                                    .where(c.id.in_(claimed))
                                    .order_by(c.next_attempt_at, c.id))
        return [m.webhook_of(r) for r in rows]

    async def finish(self, delivery: WebhookDelivery, token: str) -> None:
        c = t.webhook_deliveries.c
        result = await self._uow.execute(
            sa.update(t.webhook_deliveries)
            .where(c.id == delivery.id, c.lease_token == token)
            .values(m.webhook_row(delivery)))
        if not token or not result.rowcount:
            await self.get(delivery.id)
            raise Conflict(f"webhook delivery {delivery.id} is no longer leased to this sender",
                           code="delivery_lease_lost")

    async def list(self, flt: WebhookDeliveryFilter, *, limit: int = 50,
                   cursor: str | None = None) -> Page[WebhookDelivery]:
        check_limit(limit)
        c = t.webhook_deliveries.c
        stmt = sa.select(t.webhook_deliveries)
        if flt.org_id is not None:
            stmt = stmt.where(c.org_id == flt.org_id)
        if flt.approval_id is not None:
            stmt = stmt.where(c.approval_id == flt.approval_id)
        if flt.status is not None:
            stmt = stmt.where(c.status == flt.status.value)
        rows = await self._uow.rows(newest_first(stmt, c, cursor, limit))
        return newest_page([m.webhook_of(r) for r in rows[:limit]], more=len(rows) > limit)

    async def update(self, delivery: WebhookDelivery, *, expected: DeliveryStatus) -> None:
        c = t.webhook_deliveries.c
        result = await self._uow.execute(
            sa.update(t.webhook_deliveries)
            .where(c.id == delivery.id, c.status == expected.value)
            .values(m.webhook_row(delivery)))
        if not result.rowcount:
            stored = await self.get(delivery.id)
            raise Conflict(f"webhook delivery {delivery.id} is {stored.status.value}, "
                           f"not {expected.value}", code="delivery_changed")

    async def purge(self, finished_before: datetime, limit: int = 500) -> int:
        check_limit(limit)
        c = t.webhook_deliveries.c
        old = (c.status != DeliveryStatus.PENDING.value, c.finished_at < finished_before)
        # Ids first: SQLite has no DELETE … LIMIT.
        ids = [r["id"] for r in await self._uow.rows(sa.select(c.id).where(*old).limit(limit))]
        if not ids:
            return 0
        result = await self._uow.execute(
            sa.delete(t.webhook_deliveries).where(c.id.in_(ids), *old))
        return int(result.rowcount)
