"""Run leases and cancellation, the outbox, template sharing, and the embedded queue's table."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from tables.py, as in 0001: a migration must keep
# creating the schema it created on the day it was written.
UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
BLOB = sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _id(name: str, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), **kw)


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (SQLite accepts it with a constant default), so the
    # runs table is not rebuilt and existing rows keep every value.
    op.add_column("runs", sa.Column("lease_expires_at", UTC_DATETIME, nullable=True))
    op.add_column("runs", sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                                    server_default=sa.false()))
    op.create_index("ix_runs_status_lease", "runs", ["status", "lease_expires_at"],
                    unique=False)
    # A run already running holds no lease; one that ended at its last change lets the
    # reaper take it back unless its worker heartbeats first, instead of it running forever.
    op.execute("UPDATE runs SET lease_expires_at = COALESCE(updated_at, started_at, created_at) "
               "WHERE status = 'running'")
    op.create_index("ix_runs_org_status_created", "runs",
                    ["org_id", "status", "created_at", "id"], unique=False)

    op.create_table(
        "outbox",
        _id("id", nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("body", BLOB, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("published_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        **OPTIONS,
    )
    op.create_index("ix_outbox_pending", "outbox", ["published_at", "created_at", "id"],
                    unique=False)

    op.create_table(
        "template_grants",
        _id("template_id", nullable=False),
        _id("user_id", nullable=False),
        sa.Column("rights", sa.Integer(), nullable=False),
        sa.Column("granted_at", UTC_DATETIME, nullable=False),
        _id("granted_by", nullable=True),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("template_id", "user_id"),
        **OPTIONS,
    )
    op.create_index("ix_template_grants_user", "template_grants", ["user_id"], unique=False)

    op.create_table(
        "template_invitations",
        _id("id", nullable=False),
        _id("template_id", nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("email_key", sa.String(length=255), nullable=False),
        sa.Column("pending_key", sa.String(length=255), nullable=True),
        sa.Column("rights", sa.Integer(), nullable=False),
        _id("inviter_id", nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("answered_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("template_id", "pending_key", name="uq_template_invitations_pending"),
        **OPTIONS,
    )
    op.create_index("ix_template_invitations_code", "template_invitations", ["code_hash"],
                    unique=False)
    op.create_index("ix_template_invitations_email", "template_invitations",
                    ["email_key", "status", "created_at"], unique=False)
    op.create_index("ix_template_invitations_template", "template_invitations",
                    ["template_id", "created_at"], unique=False)

    op.create_table(
        "queue_messages",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("body", BLOB, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("available_at", UTC_DATETIME, nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("acked_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("topic", "id", name="uq_queue_messages_topic_id"),
        **OPTIONS,
    )
    op.create_index("ix_queue_messages_ready", "queue_messages",
                    ["topic", "acked_at", "available_at"], unique=False)


def downgrade() -> None:
    op.drop_table("queue_messages")
    op.drop_table("template_invitations")
    op.drop_table("template_grants")
    op.drop_table("outbox")
    op.drop_index("ix_runs_org_status_created", table_name="runs")
    op.drop_index("ix_runs_status_lease", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("lease_expires_at")
