"""Typed SQLAlchemy models of the scheduler service (the tables its migrations create).

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL. States are stored by name (``PENDING``), checked
by the database, so a row reads the same in ``psql`` as in the contract.

Definitions the contract already types (a policy, a campaign, a trigger, a
transactional request) are kept as their deterministic protobuf bytes beside the
columns the queries filter on: the contract is their schema, and a stored definition
reads back exactly as it was accepted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import UtcDateTime, conventional_metadata

ID = String(128)
SERVER_ID = String(64)

INTENT_STATES = ("PENDING", "OUTBOX", "SENT", "DROPPED")
CAMPAIGN_STATES = ("DRAFT", "SCHEDULED", "RUNNING", "PAUSED", "COMPLETED", "CANCELLED")
OUTCOMES = ("ALLOW", "DEFER", "DROP")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base of every scheduler table."""

    metadata = conventional_metadata()


class PolicyRow(Base):
    """An app's governance policy (``pushwarden.scheduler.v1.Policy``) and its version."""

    __tablename__ = "policies"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    # The stored pushwarden.scheduler.v1.Policy (output-only fields cleared).
    policy: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IntentRow(Base):
    """One send to one user, from acceptance to its final decision: the dispatch queue,
    the outbox and the per-user record GetSend, exports and decision listings read.

    ``state`` moves PENDING (waiting for ``due_at``; a DEFER sets a later ``due_at``) →
    OUTBOX (decided ALLOW: the contact is recorded in the same transaction; waiting for
    delivery to acknowledge) → SENT, or PENDING → DROPPED (final, with its reason). A
    claim pushes ``claimed_until`` forward by a lease, so a process that dies holding a
    claim gives it back when the lease runs out. ``lane`` 0 is transactional, 1
    marketing: the transactional lane is claimed by a loop of its own.
    """

    __tablename__ = "intents"
    __table_args__ = (
        CheckConstraint(_one_of("state", INTENT_STATES), name="state"),
        CheckConstraint(f"outcome IS NULL OR {_one_of('outcome', OUTCOMES)}", name="outcome"),
        UniqueConstraint("app_id", "idempotency_key", name="uq_intents_app_id_idempotency_key"),
        Index("ix_intents_state_lane_due_at", "state", "lane", "due_at"),
        Index("ix_intents_app_id_user_id", "app_id", "user_id"),
        Index("ix_intents_app_id_campaign_id_user_id", "app_id", "campaign_id", "user_id"),
        # Whether a campaign still has work (PENDING or OUTBOX) without walking its sends.
        Index("ix_intents_app_id_campaign_id_state", "app_id", "campaign_id", "state"),
        Index("ix_intents_app_id_trigger_id_user_id", "app_id", "trigger_id", "user_id"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    send_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    lane: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    category_id: Mapped[str] = mapped_column(ID)
    topic_id: Mapped[str] = mapped_column(ID)
    campaign_id: Mapped[str | None] = mapped_column(ID)
    trigger_id: Mapped[str | None] = mapped_column(ID)
    variant_id: Mapped[str] = mapped_column(String(64))
    holdout: Mapped[bool] = mapped_column(Boolean)
    event_id: Mapped[str] = mapped_column(ID)
    # Transactional sends only: the caller's key (unique per app) and the request.
    idempotency_key: Mapped[str | None] = mapped_column(ID)
    # The accepted pushwarden.scheduler.v1.SendTransactionalRequest, or for a trigger
    # firing the event's properties (pushwarden.common.v1 values), deterministic bytes.
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    priority: Mapped[int] = mapped_column(Integer)
    respect_quiet_hours: Mapped[bool] = mapped_column(Boolean)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The latest decision (ALLOW, DEFER, DROP) and its reason (ReasonCode number).
    outcome: Mapped[str | None] = mapped_column(String(8))
    reason: Mapped[int] = mapped_column(Integer)
    defer_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deferrals: Mapped[int] = mapped_column(Integer)
    # The latest decision's pushwarden.common.v1.Decision with its trace, when kept.
    decision: Mapped[bytes | None] = mapped_column(LargeBinary)
    # From ALLOW on: the pushwarden.delivery.v1.Send the outbox hands to delivery.
    send: Mapped[bytes | None] = mapped_column(LargeBinary)
    latest_send_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When delivery acknowledged the send (OUTBOX → SENT), and the outbox's tries.
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    handoff_tries: Mapped[int] = mapped_column(Integer)
    traceparent: Mapped[str] = mapped_column(String(128))
    tracestate: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ContactRow(Base):
    """One send handed to delivery: the contact history that caps count. Written in the
    transaction that decides ALLOW, so there is exactly one row per sent send."""

    __tablename__ = "contacts"
    __table_args__ = (
        CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name="kind"),
        Index("ix_contacts_app_id_user_id_at", "app_id", "user_id", "at"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    send_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    category_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(16))
    campaign_id: Mapped[str | None] = mapped_column(ID)
    trigger_id: Mapped[str | None] = mapped_column(ID)


class CampaignRow(Base):
    """A campaign: its accepted definition, its state, and how far its fan-out got.

    Fan-out streams the audience from segmentation page by page; ``fanout_cursor`` is
    segmentation's resume point after the last page whose intents are stored, written
    in the same transaction as them, so a restart resumes without a gap or a repeat.
    A claim (``claimed_until``) keeps one process on a campaign's fan-out at a time.
    """

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(_one_of("state", CAMPAIGN_STATES), name="state"),
        UniqueConstraint("app_id", "idempotency_key", name="uq_campaigns_app_id_idempotency_key"),
        Index("ix_campaigns_state_fanout_at", "state", "fanout_at"),
        Index("ix_campaigns_app_id_created_at", "app_id", "created_at"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(ID)
    state: Mapped[str] = mapped_column(String(16))
    category_id: Mapped[str] = mapped_column(ID)
    # The accepted pushwarden.scheduler.v1.Campaign (output-only fields cleared).
    definition: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When fan-out may begin (early enough for the earliest zone of a LOCAL_TIME one).
    fanout_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    fanout_cursor: Mapped[str | None] = mapped_column(String(4096))
    fan_out_complete: Mapped[bool] = mapped_column(Boolean)
    audience_size: Mapped[int] = mapped_column(BigInteger)
    holdout_size: Mapped[int] = mapped_column(BigInteger)
    claimed_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class DecisionCountRow(Base):
    """How many decisions of a campaign had one outcome and reason (a deferred intent
    counts once per deferral), kept by the transactions that decide."""

    __tablename__ = "decision_counts"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(8), primary_key=True)
    reason: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ThrottleSlotRow(Base):
    """A throttled campaign's send slots: the minute being filled and how many sends
    it holds (sent in it, or deferred to it with a reserved place). A decision that
    admits a send locks this row, so two processes never overfill a minute."""

    __tablename__ = "throttle_slots"

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    campaign_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    slot_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used: Mapped[int] = mapped_column(BigInteger)


class TriggerRow(Base):
    """An event trigger: its accepted definition and whether it fires.

    ``enabled_at`` is when it was created or last re-enabled: only events segmentation
    received at or after that instant fire it (both services read one clock), so
    history is never replayed and events of a disabled spell never fire it. ``lane``
    follows the category's kind at consent (0 transactional, 1 marketing).
    """

    __tablename__ = "triggers"
    __table_args__ = (
        UniqueConstraint("app_id", "idempotency_key", name="uq_triggers_app_id_idempotency_key"),
        Index("ix_triggers_app_id_enabled", "app_id", "enabled"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    trigger_id: Mapped[str] = mapped_column(SERVER_ID, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(ID)
    category_id: Mapped[str] = mapped_column(ID)
    lane: Mapped[int] = mapped_column(Integer)
    # The event name that fires it (the follower's filter).
    event_name: Mapped[str] = mapped_column(ID)
    # The accepted pushwarden.scheduler.v1.Trigger (output-only fields cleared).
    definition: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean)
    enabled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ServiceStateRow(Base):
    """Small named values the service keeps for itself (feed cursors)."""

    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4096))
