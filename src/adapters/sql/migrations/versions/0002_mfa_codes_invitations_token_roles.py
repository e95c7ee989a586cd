"""MFA, one-time codes, invitations; a token's roles move from a column to ``token_roles``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from tables.py, as in 0001: a migration must keep
# creating the schema it created on the day it was written.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
STAGING = "_token_roles_0002"


def _id(name: str, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), **kw)


def upgrade() -> None:
    op.create_table(
        "user_mfa",
        _id("user_id", nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("confirmed_at", UTC_DATETIME, nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
        **OPTIONS,
    )
    op.create_table(
        "user_recovery_codes",
        _id("user_id", nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("used_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "code_hash"),
        **OPTIONS,
    )
    op.create_table(
        "user_codes",
        _id("id", nullable=False),
        _id("user_id", nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("used_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        **OPTIONS,
    )
    op.create_index("ix_user_codes_hash", "user_codes", ["purpose", "code_hash"], unique=False)
    op.create_index("ix_user_codes_user", "user_codes", ["user_id", "purpose"], unique=False)
    op.create_table(
        "org_invitations",
        _id("id", nullable=False),
        _id("org_id", nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("email_key", sa.String(length=255), nullable=False),
        sa.Column("pending_key", sa.String(length=255), nullable=True),
        sa.Column("member_type", sa.String(length=32), nullable=False),
        _id("inviter_id", nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("answered_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "pending_key", name="uq_org_invitations_pending"),
        **OPTIONS,
    )
    op.create_index("ix_org_invitations_code", "org_invitations", ["code_hash"], unique=False)
    op.create_index("ix_org_invitations_email", "org_invitations",
                    ["email_key", "status", "created_at"], unique=False)
    op.create_index("ix_org_invitations_org", "org_invitations", ["org_id", "created_at"],
                    unique=False)

    # Each token's one role becomes its first assignment. The pairs wait in a staging table
    # while worker_tokens is rebuilt: on SQLite the batch rebuild drops the old table, and
    # with foreign keys on that delete would cascade into a token_roles filled beforehand.
    # A role_id naming no role of the token's own org grants nothing today (the column had
    # no foreign key), so it is not carried over.
    op.create_table(
        STAGING,
        _id("token_id", nullable=False),
        _id("role_id", nullable=False),
        **OPTIONS,
    )
    op.execute(
        f"INSERT INTO {STAGING} (token_id, role_id) "
        "SELECT t.id, t.role_id FROM worker_tokens t "
        "JOIN roles r ON r.id = t.role_id AND r.org_id = t.org_id"
    )
    with op.batch_alter_table("worker_tokens") as batch:
        batch.drop_column("role_id")
        batch.add_column(sa.Column("rotated_at", UTC_DATETIME, nullable=True))

    op.create_table(
        "token_roles",
        _id("token_id", nullable=False),
        _id("role_id", nullable=False),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["token_id"], ["worker_tokens.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_id", "role_id"),
        **OPTIONS,
    )
    op.create_index("ix_token_roles_role", "token_roles", ["role_id"], unique=False)
    op.execute(
        f"INSERT INTO token_roles (token_id, role_id) SELECT token_id, role_id FROM {STAGING}")
    op.drop_table(STAGING)


def downgrade() -> None:
    # A token holds one role again (the smallest role id of its assignments); a token with
    # none is dropped, as the old column could not be empty. Staged first for the same
    # reason as above: rebuilding worker_tokens on SQLite would cascade into token_roles.
    op.create_table(
        STAGING,
        _id("token_id", nullable=False),
        _id("role_id", nullable=False),
        **OPTIONS,
    )
    op.execute(
        f"INSERT INTO {STAGING} (token_id, role_id) "
        "SELECT token_id, MIN(role_id) FROM token_roles GROUP BY token_id")
    op.drop_table("token_roles")
    op.execute(f"DELETE FROM worker_tokens WHERE id NOT IN (SELECT token_id FROM {STAGING})")
    with op.batch_alter_table("worker_tokens") as batch:
        batch.add_column(sa.Column("role_id", sa.String(length=64), nullable=True))
        batch.drop_column("rotated_at")
    op.execute(
        f"UPDATE worker_tokens SET role_id = (SELECT s.role_id FROM {STAGING} s "
        "WHERE s.token_id = worker_tokens.id)")
    with op.batch_alter_table("worker_tokens") as batch:
        batch.alter_column("role_id", existing_type=sa.String(length=64), nullable=False)
    op.drop_table(STAGING)
    op.drop_table("org_invitations")
    op.drop_table("user_codes")
    op.drop_table("user_recovery_codes")
    op.drop_table("user_mfa")
