"""Webhook deliveries of approval decisions: an outbox written with the decision."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _id(name: str, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), **kw)


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        _id("id", nullable=False),
        _id("approval_id", nullable=False),
        _id("org_id", nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("hook", LONG_TEXT, nullable=False),
        sa.Column("body", LONG_TEXT, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("next_attempt_at", UTC_DATETIME, nullable=False),
        _id("lease_token", nullable=True),
        sa.Column("lease_until", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        **OPTIONS,
    )
    op.create_index("ix_webhook_deliveries_approval_id", "webhook_deliveries", ["approval_id"],
                    unique=False)
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
