"""devices: the batch index orders each user's devices by registration

Eligibility reads the devices of up to 1,000 users per call, grouped by user with the
latest registration first: (app_id, user_id, registered_at DESC, device_id) serves that
order straight from the index on SQLite (no temporary sort), and every (app_id, user_id)
lookup the old index served uses its prefix.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 08:42:58.905815
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
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_devices_app_id_user_id"))
        batch_op.create_index(
            "ix_devices_app_id_user_id_registered_at",
            ["app_id", "user_id", sa.literal_column("registered_at DESC"), "device_id"],
            unique=False,
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_app_id_user_id_registered_at")
        batch_op.create_index(
            batch_op.f("ix_devices_app_id_user_id"), ["app_id", "user_id"], unique=False
        )
