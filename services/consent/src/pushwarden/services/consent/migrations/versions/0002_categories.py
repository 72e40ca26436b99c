"""Categories: an app's message categories and their immutable kind.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 17:45:45.288064
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "categories",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("default_state", sa.String(length=16), nullable=False),
        sa.Column("user_can_opt_out", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "default_state IN ('OPTED_IN', 'OPTED_OUT')", name=op.f("ck_categories_default_state")
        ),
        sa.CheckConstraint(
            "kind IN ('TRANSACTIONAL', 'MARKETING')", name=op.f("ck_categories_kind")
        ),
        sa.PrimaryKeyConstraint("app_id", "category_id", name=op.f("pk_categories")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("categories")
