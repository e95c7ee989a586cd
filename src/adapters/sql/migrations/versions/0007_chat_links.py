"""Telegram and Slack identities linked to Opsicle users (chat_links)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    op.create_table(
        "chat_links",
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("chat_user_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("chat_username", sa.String(length=255), nullable=False),
        sa.Column("linked_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("platform", "chat_user_id"),
        **OPTIONS,
    )
    op.create_index("ix_chat_links_user_id", "chat_links", ["user_id"], unique=False)


def downgrade() -> None:
    # Dropping the table drops its index too (MySQL refuses to drop an index a key needs).
    op.drop_table("chat_links")
