"""Profiles (typed attributes and list items), events (typed properties; the events
table is the event stream, keyed by its sequence), segments and their references, static
lists and their members, and the service's own state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 18:24:21.690791
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
        "event_properties",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("string_value", sa.Text(), nullable=True),
        sa.Column("number_value", sa.Double(), nullable=True),
        sa.Column("bool_value", sa.Boolean(), nullable=True),
        sa.Column("timestamp_value", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('STRING', 'NUMBER', 'BOOL', 'TIMESTAMP', 'STRING_LIST', 'REMOVED')",
            name=op.f("ck_event_properties_kind"),
        ),
        sa.PrimaryKeyConstraint("sequence", "name", name=op.f("pk_event_properties")),
    )
    op.create_table(
        "event_property_items",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "sequence", "name", "position", name=op.f("pk_event_property_items")
        ),
    )
    op.create_table(
        "events",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("properties", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_events")),
        sa.UniqueConstraint("app_id", "event_id", name=op.f("uq_events_app_id_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_app_sequence", ["app_id", "sequence"], unique=False)
        batch_op.create_index(
            "ix_events_name_occurred", ["app_id", "name", "occurred_at"], unique=False
        )
        batch_op.create_index("ix_events_received_at", ["received_at"], unique=False)
        batch_op.create_index(
            "ix_events_user_name_occurred",
            ["app_id", "user_id", "name", "occurred_at"],
            unique=False,
        )

    op.create_table(
        "list_members",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("list_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "list_id", "user_id", name=op.f("pk_list_members")),
    )
    with op.batch_alter_table("list_members", schema=None) as batch_op:
        batch_op.create_index("ix_list_members_user", ["app_id", "user_id"], unique=False)

    op.create_table(
        "lists",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("list_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "kind IN ('GENERIC', 'SUPPRESSION', 'SEED')", name=op.f("ck_lists_kind")
        ),
        sa.PrimaryKeyConstraint("app_id", "list_id", name=op.f("pk_lists")),
        sa.UniqueConstraint(
            "app_id", "idempotency_key", name=op.f("uq_lists_app_id_idempotency_key")
        ),
    )
    op.create_table(
        "profile_attribute_items",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "user_id", "name", "position", name=op.f("pk_profile_attribute_items")
        ),
    )
    with op.batch_alter_table("profile_attribute_items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_profile_attribute_items_value", ["app_id", "name", "value"], unique=False
        )

    op.create_table(
        "profile_attributes",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("string_value", sa.Text(), nullable=True),
        sa.Column("number_value", sa.Double(), nullable=True),
        sa.Column("bool_value", sa.Boolean(), nullable=True),
        sa.Column("timestamp_value", sa.DateTime(timezone=True), nullable=True),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('STRING', 'NUMBER', 'BOOL', 'TIMESTAMP', 'STRING_LIST', 'REMOVED')",
            name=op.f("ck_profile_attributes_kind"),
        ),
        sa.PrimaryKeyConstraint("app_id", "user_id", "name", name=op.f("pk_profile_attributes")),
    )
    with op.batch_alter_table("profile_attributes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_profile_attributes_number", ["app_id", "name", "number_value"], unique=False
        )
        batch_op.create_index(
            "ix_profile_attributes_string", ["app_id", "name", "string_value"], unique=False
        )
        batch_op.create_index(
            "ix_profile_attributes_timestamp", ["app_id", "name", "timestamp_value"], unique=False
        )

    op.create_table(
        "profiles",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name=op.f("pk_profiles")),
    )
    op.create_table(
        "segment_references",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("segment_id", sa.String(length=128), nullable=False),
        sa.Column("target_kind", sa.String(length=8), nullable=False),
        sa.Column("target_id", sa.String(length=128), nullable=False),
        sa.CheckConstraint(
            "target_kind IN ('SEGMENT', 'LIST')", name=op.f("ck_segment_references_target_kind")
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "segment_id", "target_kind", "target_id", name=op.f("pk_segment_references")
        ),
    )
    with op.batch_alter_table("segment_references", schema=None) as batch_op:
        batch_op.create_index(
            "ix_segment_references_target", ["app_id", "target_kind", "target_id"], unique=False
        )

    op.create_table(
        "segments",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("segment_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rule", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "segment_id", name=op.f("pk_segments")),
        sa.UniqueConstraint(
            "app_id", "idempotency_key", name=op.f("uq_segments_app_id_idempotency_key")
        ),
    )
    op.create_table(
        "service_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_state")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("service_state")
    op.drop_table("segments")
    with op.batch_alter_table("segment_references", schema=None) as batch_op:
        batch_op.drop_index("ix_segment_references_target")

    op.drop_table("segment_references")
    op.drop_table("profiles")
    with op.batch_alter_table("profile_attributes", schema=None) as batch_op:
        batch_op.drop_index("ix_profile_attributes_timestamp")
        batch_op.drop_index("ix_profile_attributes_string")
        batch_op.drop_index("ix_profile_attributes_number")

    op.drop_table("profile_attributes")
    with op.batch_alter_table("profile_attribute_items", schema=None) as batch_op:
        batch_op.drop_index("ix_profile_attribute_items_value")

    op.drop_table("profile_attribute_items")
    op.drop_table("lists")
    with op.batch_alter_table("list_members", schema=None) as batch_op:
        batch_op.drop_index("ix_list_members_user")

    op.drop_table("list_members")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_user_name_occurred")
        batch_op.drop_index("ix_events_received_at")
        batch_op.drop_index("ix_events_name_occurred")
        batch_op.drop_index("ix_events_app_sequence")

    op.drop_table("events")
    op.drop_table("event_property_items")
    op.drop_table("event_properties")
