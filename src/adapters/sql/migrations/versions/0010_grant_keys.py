"""The approver's grant key ring in the store (grant_key_rings, grant_keys), and an index
on webhook_deliveries (org_id, created_at) for listing an org's deliveries."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

UTC_DATETIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def _id(name: str, **kw: Any) -> sa.Column[str]:
    return sa.Column(name, sa.String(length=64), **kw)


def upgrade() -> None:
    op.create_table(
        "grant_key_rings",
        _id("ring", nullable=False),
        _id("current_key_id", nullable=False),
        sa.PrimaryKeyConstraint("ring"),
        **OPTIONS,
    )
    op.create_table(
        "grant_keys",
        _id("ring", nullable=False),
        _id("key_id", nullable=False),
        _id("public_key", nullable=False),
        sa.Column("sealed_private", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("retired_at", UTC_DATETIME, nullable=True),
        sa.Column("expires_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("ring", "key_id"),
        **OPTIONS,
    )
    op.create_index("ix_webhook_deliveries_org_created", "webhook_deliveries",
                    ["org_id", "created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_org_created", table_name="webhook_deliveries")
    op.drop_table("grant_keys")
    op.drop_table("grant_key_rings")
