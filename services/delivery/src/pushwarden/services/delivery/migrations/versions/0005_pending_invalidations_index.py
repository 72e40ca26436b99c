"""Pending dead-token reports: a partial index of the send devices whose token died and
that consent has not been told about yet (the dispatcher reads them after every pass,
which scanned every device without it).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 08:36:46.992619
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
    with op.batch_alter_table("send_devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_send_devices_pending_invalidations",
            ["status", "invalidation_reported"],
            unique=False,
            sqlite_where=sa.text("status = 'TOKEN_DEAD' AND invalidation_reported = 0"),
            postgresql_where=sa.text("status = 'TOKEN_DEAD' AND invalidation_reported = false"),
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("send_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_send_devices_pending_invalidations")
