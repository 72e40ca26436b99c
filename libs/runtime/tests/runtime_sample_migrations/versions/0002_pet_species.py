"""A pet's species, indexed.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add pets.species with an index (batch mode rebuilds the table on SQLite)."""
    with op.batch_alter_table("pets") as batch:
        batch.add_column(
            sa.Column("species", sa.String(length=20), nullable=False, server_default="cat")
        )
        batch.create_index(batch.f("ix_pets_species"), ["species"])


def downgrade() -> None:
    """Remove pets.species."""
    with op.batch_alter_table("pets") as batch:
        batch.drop_index(batch.f("ix_pets_species"))
        batch.drop_column("species")
