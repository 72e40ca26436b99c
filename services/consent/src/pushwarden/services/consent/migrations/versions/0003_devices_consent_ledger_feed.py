"""Devices, consent choices, preferences, the ledger and its payloads, the change feed,
idempotency keys, suppressions, prompt events and the service's own state.

On PostgreSQL the database itself refuses UPDATE, DELETE and TRUNCATE of ledger
entries and UPDATE of ledger payloads (erasure deletes payloads, never entries).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:54:12.280379
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


LEDGER_GUARD = """
CREATE FUNCTION pushwarden_ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the consent ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER ledger_entries_append_only
    BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION pushwarden_ledger_is_append_only();
CREATE TRIGGER ledger_entries_no_truncate
    BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION pushwarden_ledger_is_append_only();
CREATE TRIGGER ledger_payloads_no_update
    BEFORE UPDATE ON ledger_payloads
    FOR EACH ROW EXECUTE FUNCTION pushwarden_ledger_is_append_only();
"""

LEDGER_GUARD_DROP = """
DROP TRIGGER IF EXISTS ledger_payloads_no_update ON ledger_payloads;
DROP TRIGGER IF EXISTS ledger_entries_no_truncate ON ledger_entries;
DROP TRIGGER IF EXISTS ledger_entries_append_only ON ledger_entries;
DROP FUNCTION IF EXISTS pushwarden_ledger_is_append_only();
"""


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "changes",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_changes")),
    )
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.create_index("ix_changes_app_id_sequence", ["app_id", "sequence"], unique=False)
        batch_op.create_index("ix_changes_committed_at", ["committed_at"], unique=False)

    op.create_table(
        "consent_choices",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("scope_key", sa.String(length=300), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("category_id", sa.String(length=128), nullable=False),
        sa.Column("topic_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("wording_id", sa.String(length=128), nullable=False),
        sa.Column("legal_basis", sa.String(length=32), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "ledger_sequence", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.CheckConstraint(
            "action IN ('OPT_IN', 'OPT_OUT')", name=op.f("ck_consent_choices_action")
        ),
        sa.PrimaryKeyConstraint("app_id", "user_id", "scope_key", name=op.f("pk_consent_choices")),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("locale", sa.String(length=64), nullable=False),
        sa.Column("app_version", sa.String(length=64), nullable=False),
        sa.Column("permission", sa.String(length=16), nullable=False),
        sa.Column("os_version", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("invalid_reason", sa.String(length=32), nullable=True),
        sa.Column("invalid_detail", sa.Text(), nullable=False),
        sa.Column("invalidated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'INVALID', 'UNREGISTERED')", name=op.f("ck_devices_status")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
        sa.UniqueConstraint("app_id", "token", name=op.f("uq_devices_app_id_token")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index("ix_devices_app_id_user_id", ["app_id", "user_id"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("rpc", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "rpc", "owner", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("scope_key", sa.String(length=300), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("payload_digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_app_id_recorded_at", ["app_id", "recorded_at"], unique=False
        )
        batch_op.create_index(
            "ix_ledger_entries_subject_sequence", ["subject", "sequence"], unique=False
        )

    op.create_table(
        "preferences",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "user_id", name=op.f("pk_preferences")),
    )
    op.create_table(
        "prompt_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("context", sa.String(length=128), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_events")),
        sa.UniqueConstraint(
            "app_id", "idempotency_key", name=op.f("uq_prompt_events_app_id_idempotency_key")
        ),
    )
    with op.batch_alter_table("prompt_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_prompt_events_app_id_occurred_at", ["app_id", "occurred_at"], unique=False
        )
        batch_op.create_index(
            "ix_prompt_events_app_id_user_id", ["app_id", "user_id"], unique=False
        )

    op.create_table(
        "service_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_state")),
    )
    op.create_table(
        "suppressions",
        sa.Column("app_id", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("app_id", "subject", name=op.f("pk_suppressions")),
    )
    op.create_table(
        "ledger_payloads",
        sa.Column(
            "sequence",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sequence"],
            ["ledger_entries.sequence"],
            name=op.f("fk_ledger_payloads_sequence_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_ledger_payloads")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LEDGER_GUARD)


def downgrade() -> None:
    """Revert this revision."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(LEDGER_GUARD_DROP)
    op.drop_table("ledger_payloads")
    op.drop_table("suppressions")
    op.drop_table("service_state")
    with op.batch_alter_table("prompt_events", schema=None) as batch_op:
        batch_op.drop_index("ix_prompt_events_app_id_user_id")
        batch_op.drop_index("ix_prompt_events_app_id_occurred_at")

    op.drop_table("prompt_events")
    op.drop_table("preferences")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_subject_sequence")
        batch_op.drop_index("ix_ledger_entries_app_id_recorded_at")

    op.drop_table("ledger_entries")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_app_id_user_id")

    op.drop_table("devices")
    op.drop_table("consent_choices")
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_index("ix_changes_committed_at")
        batch_op.drop_index("ix_changes_app_id_sequence")

    op.drop_table("changes")
