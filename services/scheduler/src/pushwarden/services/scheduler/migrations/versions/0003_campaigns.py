"""Campaigns (definition, state, fan-out progress) and their decision counters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 05:29:53.328385
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "campaigns",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("definition", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fanout_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fanout_cursor", sa.String(length=4096), nullable=True),
        sa.Column("fan_out_complete", sa.Boolean(), nullable=False),
        sa.Column("audience_size", sa.BigInteger(), nullable=False),
        sa.Column("holdout_size", sa.BigInteger(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('DRAFT', 'SCHEDULED', 'RUNNING', 'PAUSED', 'COMPLETED', 'CANCELLED')",
            name=op.f("ck_campaigns_state"),
        ),
        sa.PrimaryKeyConstraint("app_id", "campaign_id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint(
            "app_id", "idempotency_key", name="uq_campaigns_app_id_idempotency_key"
        ),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(
            "ix_campaigns_app_id_created_at", ["app_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_campaigns_state_fanout_at", ["state", "fanout_at"], unique=False)

    op.create_table(
        "decision_counts",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "campaign_id", "outcome", "reason", name=op.f("pk_decision_counts")
        ),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("decision_counts")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_state_fanout_at")
        batch_op.drop_index("ix_campaigns_app_id_created_at")

    op.drop_table("campaigns")
