"""Changes name the other user they mention (a token's previous owner), so that
erasing that user can scrub it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:23:53.774145
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
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("related_user_id", sa.String(length=128), server_default="", nullable=False)
        )
        batch_op.create_index(
            "ix_changes_app_id_related_user_id", ["app_id", "related_user_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index("ix_changes_app_id_related_user_id")
        batch_op.drop_column("related_user_id")
