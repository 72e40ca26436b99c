"""Typed SQLAlchemy models of the delivery service (the tables its migrations create).

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL. Statuses are stored by name (``DELIVERED``),
checked by the database, so a row reads the same in ``psql`` as in the contract.

No table holds a device token: tokens are resolved at consent right before each
provider batch and live only in memory for that batch.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import UtcDateTime, conventional_metadata

ID = String(128)
SERVER_ID = String(64)
# 64-bit on PostgreSQL; SQLite's INTEGER PRIMARY KEY is 64-bit and autoincrements.
SEQUENCE = BigInteger().with_variant(Integer(), "sqlite")

SEND_STATUSES = (
    "PENDING",
    "IN_PROGRESS",
    "DELIVERED",
    "FAILED",
    "EXPIRED",
    "SUPPRESSED",
    "DEAD_LETTERED",
    "LATE",
)
DEVICE_STATUSES = ("RETRYING", "DELIVERED", "FAILED", "TOKEN_DEAD", "DEAD_LETTERED", "SKIPPED")
OUTCOMES = ("DELIVERED", "TOKEN_DEAD", "RETRYABLE", "FAILED")


# The predicate of the partial index of pending dead-token reports, as each database
# renders the query's own terms (SQLite uses a partial index only for a query whose
# terms match the index's).
PENDING_INVALIDATION_SQLITE = "status = 'TOKEN_DEAD' AND invalidation_reported = 0"
PENDING_INVALIDATION_POSTGRESQL = "status = 'TOKEN_DEAD' AND invalidation_reported = false"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base of every delivery table."""

    metadata = conventional_metadata()


class SendRow(Base):
    """One accepted send: stored before Deliver answers, keyed by the caller's send id.

    ``lane`` orders the dispatch queue (0 transactional, 1 marketing); a send is due
    while its status is PENDING or IN_PROGRESS and ``next_attempt_at`` has passed. A
    claim pushes ``next_attempt_at`` forward by a lease, so a process that dies holding
    it gives it back when the lease runs out.
    """

    __tablename__ = "sends"
    __table_args__ = (
        CheckConstraint(_one_of("status", SEND_STATUSES), name="status"),
        CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name="kind"),
        Index("ix_sends_status_lane_next_attempt_at", "status", "lane", "next_attempt_at"),
        Index("ix_sends_app_id_user_id", "app_id", "user_id"),
        Index("ix_sends_app_id_campaign_id", "app_id", "campaign_id"),
        Index("ix_sends_app_id_trigger_id", "app_id", "trigger_id"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    send_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    category_id: Mapped[str] = mapped_column(ID)
    topic_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(16))
    campaign_id: Mapped[str] = mapped_column(ID)
    variant_id: Mapped[str] = mapped_column(ID)
    trigger_id: Mapped[str] = mapped_column(ID)
    priority: Mapped[int] = mapped_column(Integer)
    # The accepted pushwarden.delivery.v1.Send (content included), deterministic bytes.
    send: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    latest_send_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lane: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Passes made (claims that reached consent), and provider HTTP requests made.
    passes: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(Integer)
    failure_reason: Mapped[str] = mapped_column(Text)
    suppressed_reason: Mapped[int] = mapped_column(Integer)
    traceparent: Mapped[str] = mapped_column(String(128))
    tracestate: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SendDeviceRow(Base):
    """The fan-out of a send to one device (ids from consent, never the token)."""

    __tablename__ = "send_devices"
    __table_args__ = (
        CheckConstraint(_one_of("status", DEVICE_STATUSES), name="status"),
        ForeignKeyConstraint(
            ["app_id", "send_id"], ["sends.app_id", "sends.send_id"], ondelete="CASCADE"
        ),
        # The dead tokens consent has not been told about (the dispatcher reads them
        # after every pass): a partial index, so the other devices cost it nothing.
        Index(
            "ix_send_devices_pending_invalidations",
            "status",
            "invalidation_reported",
            sqlite_where=text(PENDING_INVALIDATION_SQLITE),
            postgresql_where=text(PENDING_INVALIDATION_POSTGRESQL),
        ),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    send_id: Mapped[str] = mapped_column(ID, primary_key=True)
    device_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    provider: Mapped[int] = mapped_column(Integer)
    platform: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # Provider HTTP requests made for this device: the attempt budget counts them.
    requests: Mapped[int] = mapped_column(Integer)
    tries: Mapped[int] = mapped_column(Integer)
    apns_id: Mapped[str] = mapped_column(String(36))
    reason: Mapped[str] = mapped_column(Text)
    # TOKEN_DEAD only: whether consent has been told (InvalidateDevice), and when the
    # provider said the token died.
    invalidation_reported: Mapped[bool] = mapped_column(Boolean)
    invalidated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AttemptRow(Base):
    """One provider call for one device of a send (one try; its HTTP requests counted)."""

    __tablename__ = "attempts"
    __table_args__ = (
        CheckConstraint(_one_of("outcome", OUTCOMES), name="outcome"),
        Index("ix_attempts_app_id_send_id", "app_id", "send_id"),
        ForeignKeyConstraint(
            ["app_id", "send_id"], ["sends.app_id", "sends.send_id"], ondelete="CASCADE"
        ),
    )

    attempt_id: Mapped[int] = mapped_column(SEQUENCE, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ID)
    send_id: Mapped[str] = mapped_column(ID)
    device_id: Mapped[str] = mapped_column(SERVER_ID)
    retry_number: Mapped[int] = mapped_column(Integer)
    provider: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    apns_id: Mapped[str] = mapped_column(String(36))
    fcm_message_id: Mapped[str] = mapped_column(Text)
    requests: Mapped[int] = mapped_column(Integer)
    retry_after_s: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ServiceStateRow(Base):
    """Small named values the service keeps for itself: the consent feed cursor."""

    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


SUBJECT_KINDS = ("CAMPAIGN", "TRIGGER")
ENGAGEMENT_KINDS = ("DELIVERED", "OPENED", "DISMISSED", "CONVERTED")


class AssignmentRow(Base):
    """One assignment (RecordAssignments): a campaign's user, or one firing of a trigger.

    The key is the subject and ``assignment_key`` (the user id for a campaign, the firing
    id for a trigger). Conversions are attributed from ``assigned_at`` for every row,
    treatment and holdout alike (intent to treat).
    """

    __tablename__ = "assignments"
    __table_args__ = (
        CheckConstraint(_one_of("subject_kind", SUBJECT_KINDS), name="subject_kind"),
        CheckConstraint("NOT (holdout AND variant_id <> '')", name="holdout_variant"),
        Index("ix_assignments_app_id_user_id", "app_id", "user_id"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject_id: Mapped[str] = mapped_column(ID, primary_key=True)
    assignment_key: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    variant_id: Mapped[str] = mapped_column(ID)
    holdout: Mapped[bool] = mapped_column(Boolean)
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class EngagementRow(Base):
    """One engagement report (ReportEngagement), keyed by the caller's event id.

    ``send_id`` is "" for a conversion reported without one. ``local_hour`` is the hour
    of an open in the user's zone as consent named it when the open was recorded (None
    when unknown), so the app-wide local histogram is a plain GROUP BY on both backends.
    """

    __tablename__ = "engagement_events"
    __table_args__ = (
        CheckConstraint(_one_of("kind", ENGAGEMENT_KINDS), name="kind"),
        CheckConstraint(
            "local_hour IS NULL OR (local_hour >= 0 AND local_hour < 24)", name="local_hour"
        ),
        Index(
            "ix_engagement_events_app_id_user_id_kind", "app_id", "user_id", "kind", "occurred_at"
        ),
        Index("ix_engagement_events_app_id_send_id", "app_id", "send_id"),
        Index("ix_engagement_events_app_id_kind_occurred_at", "app_id", "kind", "occurred_at"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    event_id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(ID)
    send_id: Mapped[str] = mapped_column(ID)
    device_id: Mapped[str] = mapped_column(ID)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    value: Mapped[float] = mapped_column(Float)
    currency: Mapped[str] = mapped_column(String(3))
    conversion_name: Mapped[str] = mapped_column(ID)
    local_hour: Mapped[int | None] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class OptOutRow(Base):
    """A marketing opt-out read from consent's change feed (keyed by the feed's sequence,
    so a replayed batch writes nothing twice), for ``opt_outs_within_24h``."""

    __tablename__ = "opt_outs"
    __table_args__ = (
        Index("ix_opt_outs_app_id_user_id_opted_out_at", "app_id", "user_id", "opted_out_at"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(ID)
    scope_kind: Mapped[str] = mapped_column(String(16))
    opted_out_at: Mapped[datetime] = mapped_column(UtcDateTime)
