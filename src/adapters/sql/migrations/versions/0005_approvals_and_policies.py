"""Approval requests of runs, who may answer them, org approval policies and settings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from tables.py: a migration must keep creating the schema
# it created on the day it was written.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _id(name: str, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), **kw)


def upgrade() -> None:
    op.create_table(
        "approvals",
        _id("id", nullable=False),
        _id("run_id", nullable=False),
        _id("org_id", nullable=False),
        _id("requested_by", nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("decided_at", UTC_DATETIME, nullable=True),
        sa.Column("policy", LONG_TEXT, nullable=False),
        sa.Column("responses", LONG_TEXT, nullable=False),
        sa.Column("messages", LONG_TEXT, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("grant", LONG_TEXT, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id"),
        **OPTIONS,
    )
    op.create_index("ix_approvals_org_created", "approvals", ["org_id", "created_at", "id"],
                    unique=False)
    op.create_index("ix_approvals_status_expires", "approvals", ["status", "expires_at"],
                    unique=False)

    op.create_table(
        "approval_responders",
        _id("approval_id", nullable=False),
        _id("user_id", nullable=False),
        sa.ForeignKeyConstraint(["approval_id"], ["approvals.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("approval_id", "user_id"),
        **OPTIONS,
    )
    op.create_index("ix_approval_responders_user", "approval_responders", ["user_id"],
                    unique=False)

    op.create_table(
        "approval_policies",
        _id("id", nullable=False),
        _id("org_id", nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content", LONG_TEXT, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        _id("created_by", nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("org_id", "name", name="uq_approval_policies_org_name"),
        **OPTIONS,
    )

    op.create_table(
        "org_approval_settings",
        _id("org_id", nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.Column("policy_ref", sa.String(length=255), nullable=True),
        sa.Column("updated_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id"),
        **OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("org_approval_settings")
    op.drop_table("approval_policies")
    op.drop_index("ix_approval_responders_user", table_name="approval_responders")
    op.drop_table("approval_responders")
    op.drop_index("ix_approvals_status_expires", table_name="approvals")
    op.drop_index("ix_approvals_org_created", table_name="approvals")
    op.drop_table("approvals")
