"""Migrations keep stored data: a database filled at 0001 comes through to head intact."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.sql.engine import create_engine
from adapters.sql.migrate import current_revision, migrate
from adapters.sql.repositories import SqlUnitOfWork
from adapters.sql.tables import metadata
from domain.automations import PhaseResult, PhaseStatus, Run, RunStatus
from domain.errors import NotFound
from domain.orgs import Organisation
from domain.permissions import Action, Grant, Resource, Role
from domain.resources import AutomationSpec, Phase, VolumeMount
from domain.tokens import WorkerToken
from domain.users import User
from tests.contract.builders import at, uid
from tests.contract.conftest import MARIADB_SERVER, _execute
from tests.support import port_open, require_service

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
    assert await current_revision(url) == "0002"
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
