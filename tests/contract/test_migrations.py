"""Migrations keep stored data: a database filled at 0001 or 0002 comes through to head intact."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.sql.engine import create_engine
from adapters.sql.migrate import alembic_config, current_revision, migrate
from adapters.sql.repositories import SqlUnitOfWork
from adapters.sql.tables import metadata
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus
from domain.errors import Conflict, NotFound
from domain.orgs import Invitation, InvitationStatus, MemberType, Organisation
from domain.outbox import OutboxMessage
from domain.permissions import Action, Grant, Resource, Role
from domain.resources import AutomationSpec, Phase, VolumeMount
from domain.templates import (
    ALL_TEMPLATE_RIGHTS,
    Template,
    TemplateGrant,
    TemplateInvitation,
    TemplateRight,
    TemplateVersion,
)
from domain.tokens import WorkerToken
from domain.users import CodePurpose, MfaEnrolment, OneTimeCode, User
from tests.contract.builders import at, uid
from tests.contract.conftest import MARIADB_SERVER, _execute
from tests.support import port_open, require_service

HEAD = "0012"

# Naive UTC with microseconds, as 0001 stored datetimes on both backends.
T0_SQL = "2025-03-14 15:09:26.535897"
T1_SQL = "2025-03-14 15:09:27.535897"


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database nothing was migrated on yet: a new SQLite file, or a new MariaDB schema."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    require_service("MariaDB", port_open("127.0.0.1", 3306))
    name = f"opsicle_migration_{secrets.token_hex(4)}"
    await _execute(f"{MARIADB_SERVER}/", f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield f"{MARIADB_SERVER}/{name}"
    finally:
        await _execute(f"{MARIADB_SERVER}/", f"DROP DATABASE IF EXISTS {name}")


class Ids:
    """The ids of one filled database; unique so a failure never meets stale rows."""

    def __init__(self) -> None:
        self.user, self.org, self.other_org = uid("usr"), uid("org"), uid("org")
        self.role, self.foreign_role = uid("role"), uid("role")
        self.ci, self.backup = uid("tok"), uid("tok")
        self.dangling, self.cross_org = uid("tok"), uid("tok")
        self.run = uid("run")


SPEC_JSON = (
    '{"phases":[{"commands":["echo one"],"image":"alpine:3","name":"build","timeout":600}],'
    '"volume_mounts":[{"container":"/data","host":"/srv/data"}]}'
)
PHASES_JSON = (
    '[{"exit_code":0,"finished_at":"2025-03-14T15:09:27.535897+00:00","name":"build",'
    '"started_at":"2025-03-14T15:09:26.535897+00:00","status":"succeeded"}]'
)


async def _fill_at_0001(url: str, ids: Ids) -> None:
    """Rows as the 0001 schema held them, written with plain SQL (no current mapping)."""
    statements = [
        ("INSERT INTO users (id, email, email_key, password_hash, created_at, "
         "email_verified_at, disabled_at) VALUES (:user, 'Ada@Example.com', "
         "'ada@example.com', 'argon2-hash', :t0, :t1, NULL)"),
        ("INSERT INTO orgs (id, name, code, code_key, created_at, created_by) "
         "VALUES (:org, 'Ops', :code, :code_key, :t0, :user)"),
        ("INSERT INTO orgs (id, name, code, code_key, created_at, created_by) "
         "VALUES (:other_org, 'Other', :other_code, :other_code_key, :t0, :user)"),
        ("INSERT INTO memberships (org_id, user_id, type, joined_at) "
         "VALUES (:org, :user, 'admin', :t0)"),
        "INSERT INTO roles (id, org_id, name, builtin) VALUES (:role, :org, 'deployers', 0)",
        ("INSERT INTO roles (id, org_id, name, builtin) "
         "VALUES (:foreign_role, :other_org, 'foreign', 1)"),
        ("INSERT INTO role_grants (role_id, resource, allow_mask, deny_mask) "
         f"VALUES (:role, 'automations', {int(Action.VIEW | Action.EXECUTE)}, 0)"),
        "INSERT INTO role_assignments (org_id, user_id, role_id) VALUES (:org, :user, :role)",
        ("INSERT INTO worker_tokens (id, org_id, name, role_id, secret_hash, created_at, "
         "created_by, revoked_at) VALUES "
         "(:ci, :org, 'ci', :role, 'hash-ci', :t0, :user, NULL), "
         "(:backup, :org, 'backup', :role, 'hash-backup', :t0, NULL, :t1), "
         "(:dangling, :org, 'dangling', 'role-gone', 'hash-d', :t0, NULL, NULL), "
         "(:cross_org, :org, 'cross', :foreign_role, 'hash-x', :t0, NULL, NULL)"),
        ("INSERT INTO runs (id, status, name, org_id, template_id, template_version, "
         "requested_by, comment, spec, variables, phases, reason, attempts, worker_id, "
         "created_at, updated_at, started_at, finished_at) VALUES (:run, 'succeeded', "
         "'backup', :org, 'tpl-1', 2, :user, 'nightly', :spec, :variables, "
         ":phases, '', 1, 'wkr-1', :t0, :t1, :t0, :t1)"),
    ]
    params = {**vars(ids), "t0": T0_SQL, "t1": T1_SQL, "spec": SPEC_JSON,
              "variables": '{"host":"db1"}', "phases": PHASES_JSON,
              "code": f"OPS-{ids.org}", "code_key": f"ops-{ids.org}",
              "other_code": f"OTHER-{ids.other_org}", "other_code_key": f"other-{ids.other_org}"}
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                used = {k: v for k, v in params.items() if f":{k}" in statement}
                await conn.execute(sa.text(statement), used)
    finally:
        await engine.dispose()


async def _migrated_from_0001(url: str) -> Ids:
    await migrate(url, "0001")
    assert await current_revision(url) == "0001"
    ids = Ids()
    await _fill_at_0001(url, ids)
    await migrate(url)
    assert await current_revision(url) == HEAD
    return ids


async def test_migrating_to_head_keeps_every_row_and_moves_token_roles(
        empty_url: str) -> None:
    ids = await _migrated_from_0001(empty_url)
    engine = create_engine(empty_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            assert await uow.users.get(ids.user) == User(
                id=ids.user, email="Ada@Example.com", password_hash="argon2-hash",
                created_at=at(0), email_verified_at=at(1))
            assert await uow.orgs.get(ids.org) == Organisation(
                id=ids.org, name="Ops", code=f"OPS-{ids.org}", created_at=at(0),
                created_by=ids.user)
            role = Role(id=ids.role, org_id=ids.org, name="deployers", grants={
                Resource.AUTOMATIONS: Grant(allow=Action.VIEW | Action.EXECUTE)})
            assert await uow.roles.get(ids.role) == role
            assert await uow.roles.of_member(ids.org, ids.user) == [role]

            assert await uow.tokens.get(ids.ci) == WorkerToken(
                id=ids.ci, org_id=ids.org, name="ci", secret_hash="hash-ci",
                created_at=at(0), created_by=ids.user)
            assert await uow.tokens.get(ids.backup) == WorkerToken(
                id=ids.backup, org_id=ids.org, name="backup", secret_hash="hash-backup",
                created_at=at(0), revoked_at=at(1))
            assert await uow.roles.of_token(ids.ci) == [role]
            assert await uow.roles.of_token(ids.backup) == [role]
            assert [t.id for t in await uow.tokens.of_org(ids.org)] == [
                ids.backup, ids.ci, ids.cross_org, ids.dangling]

            assert await uow.runs.get(ids.run) == Run(
                id=ids.run, status=RunStatus.SUCCEEDED, created_at=at(0), name="backup",
                org_id=ids.org, template_id="tpl-1", template_version=2,
                requested_by=ids.user, comment="nightly", variables={"host": "db1"},
                spec=AutomationSpec(
                    phases=(Phase("build", "alpine:3", ("echo one",), timeout=600),),
                    volume_mounts=(VolumeMount("/srv/data", "/data"),)),
                phases=(PhaseResult("build", PhaseStatus.SUCCEEDED, 0, at(0), at(1)),),
                attempts=1, worker_id="wkr-1", updated_at=at(1), started_at=at(0),
                finished_at=at(1))
    finally:
        await engine.dispose()


async def test_a_token_role_of_no_role_in_its_org_is_not_carried_over(
        empty_url: str) -> None:
    # 0001 had no foreign key on worker_tokens.role_id: such a role granted nothing.
    ids = await _migrated_from_0001(empty_url)
    engine = create_engine(empty_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            assert await uow.roles.of_token(ids.dangling) == []
            assert await uow.roles.of_token(ids.cross_org) == []
            assert (await uow.tokens.get(ids.dangling)).name == "dangling"
            assert (await uow.roles.get(ids.foreign_role)).org_id == ids.other_org
    finally:
        await engine.dispose()


async def test_after_migrating_filled_data_the_schema_is_the_one_the_tables_describe(
        empty_url: str) -> None:
    await _migrated_from_0001(empty_url)

    def differences(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    def token_foreign_keys(conn: sa.Connection) -> list[tuple[str, str | None]]:
        return sorted((fk["referred_table"], fk["options"].get("ondelete"))
                      for fk in sa.inspect(conn).get_foreign_keys("worker_tokens"))

    engine = create_engine(empty_url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
            # Rebuilding worker_tokens on SQLite must not lose its cascading foreign key.
            [(table, ondelete)] = await conn.run_sync(token_foreign_keys)
            assert (table, (ondelete or "").upper()) == ("orgs", "CASCADE")
    finally:
        await engine.dispose()


async def test_after_migrating_deleting_an_org_cascades_to_tokens_and_their_roles(
        empty_url: str) -> None:
    ids = await _migrated_from_0001(empty_url)
    engine = create_engine(empty_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            await uow.orgs.delete(ids.org)
            await uow.commit()
        async with SqlUnitOfWork(engine) as uow:
            with pytest.raises(NotFound):
                await uow.tokens.get(ids.ci)
            assert await uow.roles.of_token(ids.ci) == []
            assert await uow.runs.get(ids.run)  # runs hold ids without foreign keys
        async with engine.connect() as conn:
            left = await conn.execute(sa.text(
                "SELECT COUNT(*) FROM token_roles WHERE token_id IN (:ci, :backup)"),
                {"ci": ids.ci, "backup": ids.backup})
            assert left.scalar_one() == 0
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- from 0002


class Ids2(Ids):
    def __init__(self) -> None:
        super().__init__()
        self.template, self.otc, self.invitation = uid("tpl"), uid("code"), uid("inv")
        self.queued, self.running = uid("run"), uid("run")


async def _fill_at_0002(url: str, ids: Ids2) -> None:
    """Rows as the 0002 schema held them, written with plain SQL (no current mapping)."""
    run_columns = ("INSERT INTO runs (id, status, name, org_id, template_id, template_version, "
                   "requested_by, comment, spec, variables, phases, reason, attempts, "
                   "worker_id, created_at, updated_at, started_at, finished_at) VALUES ")
    statements = [
        ("INSERT INTO users (id, email, email_key, password_hash, created_at, "
         "email_verified_at, disabled_at) VALUES (:user, 'Ada@Example.com', "
         "'ada@example.com', 'argon2-hash', :t0, :t1, NULL)"),
        ("INSERT INTO orgs (id, name, code, code_key, created_at, created_by) "
         "VALUES (:org, 'Ops', :code, :code_key, :t0, :user)"),
        "INSERT INTO roles (id, org_id, name, builtin) VALUES (:role, :org, 'deployers', 0)",
        ("INSERT INTO worker_tokens (id, org_id, name, secret_hash, created_at, created_by, "
         "revoked_at, rotated_at) VALUES (:ci, :org, 'ci', 'hash-ci', :t0, :user, NULL, :t1)"),
        "INSERT INTO token_roles (token_id, role_id) VALUES (:ci, :role)",
        ("INSERT INTO user_mfa (user_id, secret, created_at, confirmed_at, last_step) "
         "VALUES (:user, 'SECRET', :t0, :t1, 42)"),
        ("INSERT INTO user_recovery_codes (user_id, code_hash, used_at) "
         "VALUES (:user, 'rc-1', NULL), (:user, 'rc-2', :t1)"),
        ("INSERT INTO user_codes (id, user_id, purpose, code_hash, created_at, expires_at, "
         "used_at) VALUES (:otc, :user, 'verify_email', 'code-hash', :t0, :t1, NULL)"),
        ("INSERT INTO org_invitations (id, org_id, email, email_key, pending_key, member_type, "
         "inviter_id, code_hash, created_at, expires_at, status, answered_at) VALUES "
         "(:invitation, :org, 'Bob@Example.com', 'bob@example.com', 'bob@example.com', "
         "'member', :user, 'inv-hash', :t0, :t1, 'pending', NULL)"),
        ("INSERT INTO templates (id, name, owner_key, org_id, owner_id, description, "
         "default_version, latest_version, created_at) VALUES "
         "(:template, 'backup', :owner_key, NULL, :user, 'nightly', 1, 1, :t0)"),
        ("INSERT INTO template_versions (template_id, version, content, created_at, "
         "created_by) VALUES (:template, 1, 'apiVersion: v1', :t0, :user)"),
        run_columns + ("(:queued, 'queued', 'backup', :org, :template, 1, :user, '', :spec, "
                       "'{}', '[]', '', 0, NULL, :t0, :t0, NULL, NULL)"),
        run_columns + ("(:running, 'running', 'backup', :org, :template, 1, :user, '', :spec, "
                       "'{}', '[]', '', 1, 'wkr-1', :t1, :t1, :t1, NULL)"),
    ]
    params = {**vars(ids), "t0": T0_SQL, "t1": T1_SQL, "spec": SPEC_JSON,
              "code": f"OPS-{ids.org}", "code_key": f"ops-{ids.org}",
              "owner_key": f"user:{ids.user}"}
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                used = {k: v for k, v in params.items() if f":{k}" in statement}
                await conn.execute(sa.text(statement), used)
    finally:
        await engine.dispose()


async def _migrated_from_0002(url: str) -> Ids2:
    await migrate(url, "0002")
    assert await current_revision(url) == "0002"
    ids = Ids2()
    await _fill_at_0002(url, ids)
    await migrate(url)
    assert await current_revision(url) == HEAD
    return ids


async def test_migrating_from_0002_keeps_every_row_and_gives_running_runs_a_lease(
        empty_url: str) -> None:
    ids = await _migrated_from_0002(empty_url)
    engine = create_engine(empty_url)
    try:
        async with SqlUnitOfWork(engine) as uow:
            assert await uow.users.get(ids.user) == User(
                id=ids.user, email="Ada@Example.com", password_hash="argon2-hash",
                created_at=at(0), email_verified_at=at(1))
            assert await uow.tokens.get(ids.ci) == WorkerToken(
                id=ids.ci, org_id=ids.org, name="ci", secret_hash="hash-ci", created_at=at(0),
                created_by=ids.user, rotated_at=at(1))
            assert [r.id for r in await uow.roles.of_token(ids.ci)] == [ids.role]
            assert await uow.mfa.of_user(ids.user) == MfaEnrolment(
                user_id=ids.user, secret="SECRET", created_at=at(0), confirmed_at=at(1),
                last_step=42)
            assert await uow.mfa.recovery_codes_left(ids.user) == 1
            assert await uow.codes.by_hash(CodePurpose.VERIFY_EMAIL, "code-hash") == OneTimeCode(
                id=ids.otc, user_id=ids.user, purpose=CodePurpose.VERIFY_EMAIL,
                code_hash="code-hash", created_at=at(0), expires_at=at(1))
            assert await uow.invitations.get(ids.invitation) == Invitation(
                id=ids.invitation, org_id=ids.org, email="Bob@Example.com",
                member_type=MemberType.MEMBER, inviter_id=ids.user, code_hash="inv-hash",
                created_at=at(0), expires_at=at(1), status=InvitationStatus.PENDING)
            assert await uow.templates.get(ids.template) == Template(
                id=ids.template, name="backup", created_at=at(0), owner_id=ids.user,
                description="nightly")
            assert await uow.templates.versions(ids.template) == [TemplateVersion(
                template_id=ids.template, version=1, content="apiVersion: v1",
                created_at=at(0), created_by=ids.user)]

            queued, running = await uow.runs.get(ids.queued), await uow.runs.get(ids.running)
            assert (queued.status, queued.lease_expires_at, queued.cancel_requested) == (
                RunStatus.QUEUED, None, False)
            assert (running.status, running.attempts, running.worker_id) == (
                RunStatus.RUNNING, 1, "wkr-1")
            # A run running before leases existed holds one that ended at its last change:
            # the reaper takes it back unless its worker heartbeats, so it never hangs.
            assert (running.lease_expires_at, running.cancel_requested) == (at(1), False)
            assert await uow.runs.expired_leases(at(0)) == []
            assert await uow.runs.expired_leases(at(1)) == [running]
            assert await uow.runs.queued_ahead(queued, 10) == 0
            assert await uow.runs.queued_ahead(running, 10) == 1
    finally:
        await engine.dispose()


async def test_after_migrating_from_0002_the_new_tables_work_with_old_rows(
        empty_url: str) -> None:
    ids = await _migrated_from_0002(empty_url)
    engine = create_engine(empty_url)
    grant = TemplateGrant(template_id=ids.template, user_id=uid("usr"),
                          rights=TemplateRight.VIEW | TemplateRight.EXECUTE, granted_at=at(2),
                          granted_by=ids.user)
    invitation = TemplateInvitation(
        id=uid("tinv"), template_id=ids.template, email="Eve@Example.com",
        rights=ALL_TEMPLATE_RIGHTS, inviter_id=ids.user, code_hash=uid("hash"),
        created_at=at(2), expires_at=at(3))
    message = OutboxMessage(id=uid("msg"), topic=f"runs.{ids.org}", body=b"{}",
                            created_at=at(2))
    try:
        async with SqlUnitOfWork(engine) as uow:
            running = await uow.runs.get(ids.running)
            held = attrs.evolve(running, attempts=2, lease_expires_at=at(5),
                                cancel_requested=True)
            await uow.runs.update(held, expected=RunStatus.RUNNING, expected_attempts=1)
            with pytest.raises(Conflict):
                await uow.runs.update(held, expected=RunStatus.RUNNING, expected_attempts=1)
            await uow.templates.grant(grant)
            await uow.templates.add_invitation(invitation)
            await uow.outbox.add(message)
            await uow.commit()
        async with SqlUnitOfWork(engine) as uow:
            assert await uow.runs.get(ids.running) == held
            assert await uow.runs.expired_leases(at(5)) == [held]
            assert await uow.templates.grants(ids.template) == [grant]
            assert await uow.templates.invitations_for("eve@example.com") == [invitation]
            assert await uow.outbox.pending() == [message]
            await uow.templates.delete(ids.template)
            assert await uow.templates.grants(ids.template) == []
            with pytest.raises(NotFound):
                await uow.templates.invitation(invitation.id)
    finally:
        await engine.dispose()


async def test_downgrading_0003_keeps_the_runs_and_upgrading_again_works(
        empty_url: str) -> None:
    ids = await _migrated_from_0002(empty_url)
    await migrate(empty_url, HEAD)
    engine = create_engine(empty_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0002"))
        assert await current_revision(empty_url) == "0002"
        await migrate(empty_url)
        async with SqlUnitOfWork(engine) as uow:
            assert (await uow.runs.get(ids.queued)).status is RunStatus.QUEUED
            assert (await uow.runs.get(ids.running)).worker_id == "wkr-1"
    finally:
        await engine.dispose()
