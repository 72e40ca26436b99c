"""Event triggers (definition, category lane, enabled and since when).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 06:54:11.803772
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "triggers",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("trigger_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("event_name", sa.String(length=128), nullable=False),
        sa.Column("definition", sa.LargeBinary(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "trigger_id", name=op.f("pk_triggers")),
        sa.UniqueConstraint("app_id", "idempotency_key", name="uq_triggers_app_id_idempotency_key"),
    )
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.create_index("ix_triggers_app_id_enabled", ["app_id", "enabled"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_triggers_app_id_enabled")

    op.drop_table("triggers")
