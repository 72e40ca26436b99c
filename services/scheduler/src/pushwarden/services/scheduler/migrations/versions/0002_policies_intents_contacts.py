"""Policies, intents (the dispatch queue and outbox), the contact history and service
state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 05:17:41.013580
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
        "contacts",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("campaign_id", sa.String(length=128), nullable=True),
        sa.Column("trigger_id", sa.String(length=128), nullable=True),
        sa.CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name=op.f("ck_contacts_kind")),
        sa.PrimaryKeyConstraint("app_id", "send_id", name=op.f("pk_contacts")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_contacts_app_id_user_id_at", ["app_id", "user_id", "at"], unique=False
        )

    op.create_table(
        "intents",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("send_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("lane", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("topic_id", sa.String(length=128), nullable=False),
        sa.Column("campaign_id", sa.String(length=128), nullable=True),
        sa.Column("trigger_id", sa.String(length=128), nullable=True),
        sa.Column("variant_id", sa.String(length=64), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("respect_quiet_hours", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=True),
        sa.Column("reason", sa.Integer(), nullable=False),
        sa.Column("defer_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.Column("decision", sa.LargeBinary(), nullable=True),
        sa.Column("send", sa.LargeBinary(), nullable=True),
        sa.Column("latest_send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("handoff_tries", sa.Integer(), nullable=False),
        sa.Column("traceparent", sa.String(length=128), nullable=False),
        sa.Column("tracestate", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('ALLOW', 'DEFER', 'DROP')",
            name=op.f("ck_intents_outcome"),
        ),
        sa.CheckConstraint(
            "state IN ('PENDING', 'OUTBOX', 'SENT', 'DROPPED')", name=op.f("ck_intents_state")
        ),
        sa.PrimaryKeyConstraint("app_id", "send_id", name=op.f("pk_intents")),
        sa.UniqueConstraint("app_id", "idempotency_key", name="uq_intents_app_id_idempotency_key"),
    )
    with op.batch_alter_table("intents", schema=None) as batch_op:
        batch_op.create_index(
            "ix_intents_app_id_campaign_id_user_id",
            ["app_id", "campaign_id", "user_id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_intents_app_id_trigger_id_user_id",
            ["app_id", "trigger_id", "user_id"],
            unique=False,
        )
        batch_op.create_index("ix_intents_app_id_user_id", ["app_id", "user_id"], unique=False)
        batch_op.create_index(
            "ix_intents_state_lane_due_at", ["state", "lane", "due_at"], unique=False
        )

    op.create_table(
        "policies",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("policy", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", name=op.f("pk_policies")),
    )
    op.create_table(
        "service_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=4096), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_state")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("service_state")
    op.drop_table("policies")
    with op.batch_alter_table("intents", schema=None) as batch_op:
        batch_op.drop_index("ix_intents_state_lane_due_at")
        batch_op.drop_index("ix_intents_app_id_user_id")
        batch_op.drop_index("ix_intents_app_id_trigger_id_user_id")
        batch_op.drop_index("ix_intents_app_id_campaign_id_user_id")

    op.drop_table("intents")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_app_id_user_id_at")

    op.drop_table("contacts")
