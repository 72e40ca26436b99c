"""An index of intents by (app, campaign, state): whether a campaign still has work.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_intents_app_id_campaign_id_state",
        "intents",
        ["app_id", "campaign_id", "state"],
        unique=False,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_intents_app_id_campaign_id_state", table_name="intents")
