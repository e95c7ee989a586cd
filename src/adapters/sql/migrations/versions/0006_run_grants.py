"""Runs keep the signed approval grant their workers check (runs.approval_grant)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable: runs that needed no approval (every existing one) carry no grant.
    op.add_column("runs", sa.Column("approval_grant", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("approval_grant")
