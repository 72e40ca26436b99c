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
