"""Service state: small named values delivery keeps for itself (the consent feed cursor).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 19:02:12.933286
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
        "service_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_state")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("service_state")
