"""Runs keep their secret variable values sealed (encrypted) for the worker."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

# Spelled out rather than imported from tables.py: a migration must keep creating the schema
# it created on the day it was written.
LONG_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    # Nullable, so existing rows need no rewrite on either backend; NULL reads as "no secrets".
    op.add_column("runs", sa.Column("sealed_secrets", LONG_TEXT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sealed_secrets")
