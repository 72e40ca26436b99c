"""Throttle slots of campaigns (the minute being filled and how many sends it holds).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 08:31:17.551886
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "throttle_slots",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("campaign_id", sa.String(length=64), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "campaign_id", name=op.f("pk_throttle_slots")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("throttle_slots")
