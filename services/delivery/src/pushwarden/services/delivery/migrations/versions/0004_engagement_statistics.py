"""Engagement and statistics: assignments (campaign users and trigger firings), engagement
events, marketing opt-outs read from consent's change feed, and an index of sends by
trigger for GetCampaignStats.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 05:18:19.855742
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
    op.create_table(
        "assignments",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("assignment_key", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "NOT (holdout AND variant_id <> '')", name=op.f("ck_assignments_holdout_variant")
        ),
        sa.CheckConstraint(
            "subject_kind IN ('CAMPAIGN', 'TRIGGER')", name=op.f("ck_assignments_subject_kind")
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "subject_kind", "subject_id", "assignment_key", name=op.f("pk_assignments")
        ),
    )
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.create_index("ix_assignments_app_id_user_id", ["app_id", "user_id"], unique=False)

    op.create_table(
        "engagement_events",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("conversion_name", sa.String(length=128), nullable=False),
        sa.Column("local_hour", sa.Integer(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('DELIVERED', 'OPENED', 'DISMISSED', 'CONVERTED')",
            name=op.f("ck_engagement_events_kind"),
        ),
        sa.CheckConstraint(
            "local_hour IS NULL OR (local_hour >= 0 AND local_hour < 24)",
            name=op.f("ck_engagement_events_local_hour"),
        ),
        sa.PrimaryKeyConstraint("app_id", "event_id", name=op.f("pk_engagement_events")),
    )
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_engagement_events_app_id_kind_occurred_at",
            ["app_id", "kind", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            "ix_engagement_events_app_id_send_id", ["app_id", "send_id"], unique=False
        )
        batch_op.create_index(
            "ix_engagement_events_app_id_user_id_kind",
            ["app_id", "user_id", "kind", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "opt_outs",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "sequence", name=op.f("pk_opt_outs")),
    )
    with op.batch_alter_table("opt_outs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_opt_outs_app_id_user_id_opted_out_at",
            ["app_id", "user_id", "opted_out_at"],
            unique=False,
        )

    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.create_index("ix_sends_app_id_trigger_id", ["app_id", "trigger_id"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_app_id_trigger_id")

    with op.batch_alter_table("opt_outs", schema=None) as batch_op:
        batch_op.drop_index("ix_opt_outs_app_id_user_id_opted_out_at")

    op.drop_table("opt_outs")
    with op.batch_alter_table("engagement_events", schema=None) as batch_op:
        batch_op.drop_index("ix_engagement_events_app_id_user_id_kind")
        batch_op.drop_index("ix_engagement_events_app_id_send_id")
        batch_op.drop_index("ix_engagement_events_app_id_kind_occurred_at")

    op.drop_table("engagement_events")
    with op.batch_alter_table("assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_assignments_app_id_user_id")

    op.drop_table("assignments")
