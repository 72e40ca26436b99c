"""Sends, their fan-out to devices, and every provider attempt.

The dispatch queue is ``sends`` itself: due rows are found by status, lane and
``next_attempt_at`` (one index), claimed with FOR UPDATE SKIP LOCKED on PostgreSQL.
No table holds a device token.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 18:48:02.636890
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
        "sends",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("topic_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("campaign_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=False),
        sa.Column("trigger_id", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("send", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latest_send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=False),
        sa.Column("suppressed_reason", sa.Integer(), nullable=False),
        sa.Column("traceparent", sa.String(length=128), nullable=False),
        sa.Column("tracestate", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name=op.f("ck_sends_kind")),
        sa.CheckConstraint(
            "status IN ('PENDING', 'IN_PROGRESS', 'DELIVERED', 'FAILED', 'EXPIRED', "
            "'SUPPRESSED', 'DEAD_LETTERED', 'LATE')",
            name=op.f("ck_sends_status"),
        ),
        sa.PrimaryKeyConstraint("app_id", "send_id", name=op.f("pk_sends")),
    )
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sends_app_id_campaign_id", ["app_id", "campaign_id"], unique=False
        )
        batch_op.create_index("ix_sends_app_id_user_id", ["app_id", "user_id"], unique=False)
        batch_op.create_index(
            "ix_sends_status_lane_next_attempt_at",
            ["status", "lane", "next_attempt_at"],
            unique=False,
        )

    op.create_table(
        "attempts",
        sa.Column(
            "attempt_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("retry_number", sa.Integer(), nullable=False),
        sa.Column("provider", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("apns_id", sa.String(length=36), nullable=False),
        sa.Column("fcm_message_id", sa.Text(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retry_after_s", sa.Float(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('DELIVERED', 'TOKEN_DEAD', 'RETRYABLE', 'FAILED')",
            name=op.f("ck_attempts_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["app_id", "send_id"],
            ["sends.app_id", "sends.send_id"],
            name=op.f("fk_attempts_app_id_send_id_sends"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_attempts")),
    )
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.create_index("ix_attempts_app_id_send_id", ["app_id", "send_id"], unique=False)

    op.create_table(
        "send_devices",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.Integer(), nullable=False),
        sa.Column("platform", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("apns_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("invalidation_reported", sa.Boolean(), nullable=False),
        sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('RETRYING', 'DELIVERED', 'FAILED', 'TOKEN_DEAD', 'DEAD_LETTERED', "
            "'SKIPPED')",
            name=op.f("ck_send_devices_status"),
        ),
        sa.ForeignKeyConstraint(
            ["app_id", "send_id"],
            ["sends.app_id", "sends.send_id"],
            name=op.f("fk_send_devices_app_id_send_id_sends"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "send_id", "device_id", name=op.f("pk_send_devices")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("send_devices")
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_attempts_app_id_send_id")

    op.drop_table("attempts")
    with op.batch_alter_table("sends", schema=None) as batch_op:
        batch_op.drop_index("ix_sends_status_lane_next_attempt_at")
        batch_op.drop_index("ix_sends_app_id_user_id")
        batch_op.drop_index("ix_sends_app_id_campaign_id")

    op.drop_table("sends")
