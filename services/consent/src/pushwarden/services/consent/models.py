"""Typed SQLAlchemy models of the consent service (the tables its migrations create).

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL. Enumerations are stored by name (``MARKETING``),
checked by the database, so a row reads the same in ``psql`` as in the contract.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import UtcDateTime, conventional_metadata

ID = String(128)
SERVER_ID = String(64)
HASH = String(64)  # hex SHA-256
# 64-bit on PostgreSQL; SQLite's INTEGER is 64-bit already.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base of every consent table."""

    metadata = conventional_metadata()


class CategoryRow(Base):
    """A message category of an app; its kind never changes once written."""

    __tablename__ = "categories"
    __table_args__ = (
        CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name="kind"),
        CheckConstraint("default_state IN ('OPTED_IN', 'OPTED_OUT')", name="default_state"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    category_id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    default_state: Mapped[str] = mapped_column(String(16))
    user_can_opt_out: Mapped[bool] = mapped_column(Boolean)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeviceRow(Base):
    """A push token of an app, registered to one user at a time."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("app_id", "token"),
        CheckConstraint("status IN ('ACTIVE', 'INVALID', 'UNREGISTERED')", name="status"),
    )

    device_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    app_id: Mapped[str] = mapped_column(ID)
    token: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(ID)
    platform: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(16))
    time_zone: Mapped[str] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(64))
    app_version: Mapped[str] = mapped_column(String(64))
    permission: Mapped[str] = mapped_column(String(16))
    os_version: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    invalid_reason: Mapped[str | None] = mapped_column(String(32))
    invalid_detail: Mapped[str] = mapped_column(Text)
    invalidated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The last-write-wins clock: the client time of the latest applied change.
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime)


# A batch's devices come back grouped by user, latest registration first, in index order
# (SQLite needs no sort); every (app, user) lookup uses its prefix.
Index(
    "ix_devices_app_id_user_id_registered_at",
    DeviceRow.app_id,
    DeviceRow.user_id,
    DeviceRow.registered_at.desc(),
    DeviceRow.device_id,
)


class ConsentChoiceRow(Base):
    """A user's latest explicit choice for one scope (the fold of the ledger's consent
    entries, kept current by the same transaction that appends the entry)."""

    __tablename__ = "consent_choices"
    __table_args__ = (CheckConstraint("action IN ('OPT_IN', 'OPT_OUT')", name="action"),)

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    # kind:channel:category_id:topic_id, e.g. "CATEGORY:PUSH:promos:".
    scope_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    scope_kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    category_id: Mapped[str] = mapped_column(ID)
    topic_id: Mapped[str] = mapped_column(ID)
    action: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(32))
    wording_id: Mapped[str] = mapped_column(ID)
    legal_basis: Mapped[str] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ledger_sequence: Mapped[int] = mapped_column(SEQUENCE)


class PreferencesRow(Base):
    """A user's preference center settings: the contract's Preferences message, stored
    as its serialized proto (typed by the contract, read and written whole)."""

    __tablename__ = "preferences"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    document: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LedgerEntryRow(Base):
    """One entry of the append-only consent ledger. Names the user only by the keyed
    pseudonym; its hash covers its fields, the previous entry's hash of the same
    subject, and the digest of its payload. Never updated or deleted (on PostgreSQL
    a trigger refuses both)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_subject_sequence", "subject", "sequence"),
        Index("ix_ledger_entries_app_id_recorded_at", "app_id", "recorded_at"),
    )

    sequence: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=False)
    app_id: Mapped[str] = mapped_column(ID)
    subject: Mapped[str] = mapped_column(HASH)
    kind: Mapped[str] = mapped_column(String(16))
    # Not personal: the scope an entry is about ("CATEGORY:PUSH:promos:") and its
    # action, so that statistics need no payload (which erasure removes).
    scope_key: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    client_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    previous_hash: Mapped[str] = mapped_column(HASH)
    entry_hash: Mapped[str] = mapped_column(HASH)
    payload_digest: Mapped[str] = mapped_column(HASH)


class LedgerPayloadRow(Base):
    """The personal details of a ledger entry (free-text reasons, actor ids, device
    facts), beside the entry so that erasure can delete them and leave a chain that
    still verifies."""

    __tablename__ = "ledger_payloads"

    sequence: Mapped[int] = mapped_column(
        SEQUENCE, ForeignKey("ledger_entries.sequence"), primary_key=True, autoincrement=False
    )
    body: Mapped[bytes] = mapped_column(LargeBinary)


class ChangeRow(Base):
    """One change of the feed followers read with WatchChanges, in commit order: the
    sequence is assigned under the append lock that also serialises the commits."""

    __tablename__ = "changes"
    __table_args__ = (
        Index("ix_changes_app_id_sequence", "app_id", "sequence"),
        Index("ix_changes_committed_at", "committed_at"),
        Index("ix_changes_app_id_related_user_id", "app_id", "related_user_id"),
    )

    sequence: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=False)
    app_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(16))
    committed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The Change message's detail, serialized (sequence and cursor are added on read).
    detail: Mapped[bytes] = mapped_column(LargeBinary)
    # Another user the detail names (a token's previous owner), so that erasing that
    # user can scrub it from this change too.
    related_user_id: Mapped[str] = mapped_column(ID, server_default="")


class IdempotencyKeyRow(Base):
    """A remembered retry key: the digest of the request it came with and the response
    the first call gave."""

    __tablename__ = "idempotency_keys"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    rpc: Mapped[str] = mapped_column(String(64), primary_key=True)
    # RecordConsent keys are per user: the user's pseudonym; "" for app-wide keys.
    owner: Mapped[str] = mapped_column(HASH, primary_key=True)
    key: Mapped[str] = mapped_column(ID, primary_key=True)
    request_digest: Mapped[str] = mapped_column(HASH)
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SuppressionRow(Base):
    """An erased user id: its pseudonym stays out of marketing until an opt-in to all
    marketing or to the push channel is recorded after the erasure."""

    __tablename__ = "suppressions"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    subject: Mapped[str] = mapped_column(HASH, primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UtcDateTime)
    lifted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PromptEventRow(Base):
    """One permission-prompt funnel event."""

    __tablename__ = "prompt_events"
    __table_args__ = (
        UniqueConstraint("app_id", "idempotency_key"),
        Index("ix_prompt_events_app_id_occurred_at", "app_id", "occurred_at"),
        Index("ix_prompt_events_app_id_user_id", "app_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    device_id: Mapped[str] = mapped_column(SERVER_ID)
    event: Mapped[str] = mapped_column(String(32))
    context: Mapped[str] = mapped_column(ID)
    platform: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    idempotency_key: Mapped[str] = mapped_column(ID)
    request_digest: Mapped[str] = mapped_column(HASH)


class ServiceStateRow(Base):
    """Small named values the service keeps for itself: the pseudonym key it made when
    none is configured (SQLite only), the feed's retention watermark."""

    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))
