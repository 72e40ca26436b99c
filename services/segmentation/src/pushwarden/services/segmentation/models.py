"""Typed SQLAlchemy models of the segmentation service (the tables its migrations create).

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL.

Typed values (profile attributes, event properties) are one row per name with one
column per type: the column the value's kind names is set, the others are NULL, so a
rule compiles to a plain indexed comparison. A string list is kept twice: canonically
encoded in ``string_value`` (for EQ / NEQ) and one row per item in an items table (for
CONTAINS, an index seek on both backends).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
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
NAME = String(128)
# 64-bit on PostgreSQL; SQLite's INTEGER is 64-bit already.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")
# PostgreSQL only: (app_id, user_id COLLATE "C") indexes that migration 0003 creates so
# that members are walked in code-point order (see storage.rules_sql.window_ends). A
# model index cannot say "this collation on PostgreSQL, none on SQLite", so schema
# comparisons leave these out (include_in_schema_diff).
CODE_POINT_INDEXES: Final = frozenset(
    {"ix_profiles_user_code_point", "ix_events_user_code_point", "ix_list_members_user_code_point"}
)


def include_in_schema_diff(
    item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object``: everything but the PostgreSQL-only indexes."""
    return not (type_ == "index" and name in CODE_POINT_INDEXES)


VALUE_KINDS = "kind IN ('STRING', 'NUMBER', 'BOOL', 'TIMESTAMP', 'STRING_LIST', 'REMOVED')"


class Base(DeclarativeBase):
    """Declarative base of every segmentation table."""

    metadata = conventional_metadata()


class ProfileRow(Base):
    """A user segmentation has a profile for (created by the first upsert)."""

    __tablename__ = "profiles"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ProfileAttributeRow(Base):
    """One attribute of a profile, or the tombstone of a removed one (kind REMOVED, every
    value NULL), kept with the ``client_time`` of its latest write so that a late, older
    write never undoes a newer one."""

    __tablename__ = "profile_attributes"
    __table_args__ = (
        CheckConstraint(VALUE_KINDS, name="kind"),
        Index("ix_profile_attributes_string", "app_id", "name", "string_value"),
        Index("ix_profile_attributes_number", "app_id", "name", "number_value"),
        Index("ix_profile_attributes_timestamp", "app_id", "name", "timestamp_value"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    string_value: Mapped[str | None] = mapped_column(Text)
    number_value: Mapped[float | None] = mapped_column(Double)
    bool_value: Mapped[bool | None] = mapped_column(Boolean)
    timestamp_value: Mapped[datetime | None] = mapped_column(UtcDateTime)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ProfileAttributeItemRow(Base):
    """One item of a string-list attribute."""

    __tablename__ = "profile_attribute_items"
    __table_args__ = (Index("ix_profile_attribute_items_value", "app_id", "name", "value"),)

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[str] = mapped_column(Text)


class EventRow(Base):
    """A behaviour event. Its ``sequence`` is its position on the event stream, handed
    out under the append lock held until commit, so it increases in commit order."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("app_id", "event_id"),
        Index("ix_events_user_name_occurred", "app_id", "user_id", "name", "occurred_at"),
        Index("ix_events_name_occurred", "app_id", "name", "occurred_at"),
        Index("ix_events_app_sequence", "app_id", "sequence"),
        Index("ix_events_received_at", "received_at"),
    )

    sequence: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=False)
    app_id: Mapped[str] = mapped_column(ID)
    event_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    name: Mapped[str] = mapped_column(NAME)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The event's properties as the contract's map, serialized, for reading back.
    properties: Mapped[bytes] = mapped_column(LargeBinary)


class EventPropertyRow(Base):
    """One typed property of an event (what property filters compare)."""

    __tablename__ = "event_properties"
    __table_args__ = (CheckConstraint(VALUE_KINDS, name="kind"),)

    sequence: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    string_value: Mapped[str | None] = mapped_column(Text)
    number_value: Mapped[float | None] = mapped_column(Double)
    bool_value: Mapped[bool | None] = mapped_column(Boolean)
    timestamp_value: Mapped[datetime | None] = mapped_column(UtcDateTime)


class EventPropertyItemRow(Base):
    """One item of a string-list event property."""

    __tablename__ = "event_property_items"

    sequence: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[str] = mapped_column(Text)


class SegmentRow(Base):
    """A saved segment: its rule tree as the serialized contract message, immutable;
    ``deleted_at`` hides it from new references without changing what it selects."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("app_id", "idempotency_key"),)

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    segment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    rule: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(ID)
    # SHA-256 of the creating request (tells a retry from a different definition).
    request_digest: Mapped[str] = mapped_column(String(64))


class SegmentReferenceRow(Base):
    """A segment's direct reference to another segment or to a list."""

    __tablename__ = "segment_references"
    __table_args__ = (
        CheckConstraint("target_kind IN ('SEGMENT', 'LIST')", name="target_kind"),
        Index("ix_segment_references_target", "app_id", "target_kind", "target_id"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    segment_id: Mapped[str] = mapped_column(ID, primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    target_id: Mapped[str] = mapped_column(ID, primary_key=True)


class ListRow(Base):
    """A static list of user ids."""

    __tablename__ = "lists"
    __table_args__ = (
        CheckConstraint("kind IN ('GENERIC', 'SUPPRESSION', 'SEED')", name="kind"),
        UniqueConstraint("app_id", "idempotency_key"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    list_id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    idempotency_key: Mapped[str | None] = mapped_column(ID)
    request_digest: Mapped[str] = mapped_column(String(64))


class ListMemberRow(Base):
    """A user's standing on a list: on it (``present``) or removed, with the
    ``client_time`` of the latest add or removal (last write wins)."""

    __tablename__ = "list_members"
    __table_args__ = (Index("ix_list_members_user", "app_id", "user_id"),)

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    list_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    written_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ServiceStateRow(Base):
    """Small named values the service keeps for itself: the event stream's sequence
    counter and retention watermark, the consent feed cursor of erasure."""

    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))
