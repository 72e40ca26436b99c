"""Longer owner names.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Widen owners.name; on SQLite batch mode rebuilds owners, which pets refer to."""
    with op.batch_alter_table("owners") as batch:
        batch.alter_column("name", existing_type=sa.String(length=50), type_=sa.String(length=80))


def downgrade() -> None:
    """Narrow owners.name again."""
    with op.batch_alter_table("owners") as batch:
        batch.alter_column("name", existing_type=sa.String(length=80), type_=sa.String(length=50))
