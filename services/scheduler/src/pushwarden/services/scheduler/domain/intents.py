"""Intents: one send to one user, from acceptance to its final decision.

Plain values only. An intent is PENDING until its due time, when the dispatch loop
decides it: ALLOW records the contact and moves it to the OUTBOX (delivery has not
acknowledged it yet), then SENT; DEFER keeps it PENDING with a later due time; DROP is
final. Transactional intents have a lane of their own that marketing never delays.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from pushwarden.common.v1 import content_pb2


class Lane(enum.IntEnum):
    """Dispatch lanes, in the order they are served."""

    TRANSACTIONAL = 0
    MARKETING = 1


class IntentState(enum.Enum):
    """Where an intent stands (stored by name)."""

    PENDING = "PENDING"
    OUTBOX = "OUTBOX"
    SENT = "SENT"
    DROPPED = "DROPPED"


def transactional_send_id(app_id: str, idempotency_key: str) -> str:
    """The send id of a transactional request: derived from its key, so a retried
    request (even one racing the first) names the same send."""
    digest = hashlib.sha256(f"{app_id}\0{idempotency_key}".encode()).hexdigest()
    return f"tx_{digest[:32]}"


@dataclass(frozen=True, slots=True)
class NewIntent:
    """An intent to store (PENDING, due at ``due_at``)."""

    app_id: str
    send_id: str
    user_id: str
    lane: Lane
    category_id: str
    due_at: datetime
    created_at: datetime
    topic_id: str = ""
    campaign_id: str | None = None
    trigger_id: str | None = None
    variant_id: str = ""
    holdout: bool = False
    event_id: str = ""
    idempotency_key: str | None = None
    body: bytes | None = None
    priority: int = 0
    respect_quiet_hours: bool = False
    expires_at: datetime | None = None
    traceparent: str = ""
    tracestate: str = ""


@dataclass(frozen=True, slots=True)
class ClaimedIntent:
    """A due intent one dispatch pass holds (until ``claimed_until``)."""

    app_id: str
    send_id: str
    user_id: str
    lane: Lane
    category_id: str
    topic_id: str
    campaign_id: str | None
    trigger_id: str | None
    variant_id: str
    event_id: str
    idempotency_key: str | None
    body: bytes | None
    priority: int
    respect_quiet_hours: bool
    expires_at: datetime | None
    due_at: datetime
    deferrals: int
    traceparent: str
    tracestate: str
    claimed_until: datetime
    # The latest decision's reason and DEFER instant (a THROTTLED deferral reserved a
    # place in the minute it was deferred to).
    reason: int = 0
    defer_until: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The intent's identity."""
        return (self.app_id, self.send_id)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a dispatch pass decided for one claimed intent.

    ``outcome`` is ALLOW, DEFER or DROP; ``reason`` a ``ReasonCode`` number (0 for
    ALLOW); ``until`` the new due time of a DEFER; ``decision`` the stored
    ``pushwarden.common.v1.Decision`` (with its trace when kept); ``send`` the
    ``pushwarden.delivery.v1.Send`` of an ALLOW, with ``kind`` and ``sent_at`` for its
    contact-history row.
    """

    intent: ClaimedIntent
    outcome: str
    reason: int
    decided_at: datetime
    until: datetime | None = None
    decision: bytes | None = None
    send: bytes | None = None
    kind: str = ""
    latest_send_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """An intent as GetSend, exports and decision listings show it."""

    app_id: str
    send_id: str
    user_id: str
    state: IntentState
    category_id: str
    campaign_id: str | None
    trigger_id: str | None
    variant_id: str
    holdout: bool
    event_id: str
    idempotency_key: str | None
    outcome: str | None
    reason: int
    defer_until: datetime | None
    decision: bytes | None
    due_at: datetime
    sent_at: datetime | None
    acknowledged_at: datetime | None


@dataclass(frozen=True, slots=True)
class PastContact:
    """One row of a user's contact history (what caps count)."""

    user_id: str
    at: datetime
    category_id: str
    kind: str
    campaign_id: str | None
    trigger_id: str | None
    send_id: str


def localized_content(
    default: content_pb2.Content,
    translations: dict[str, content_pb2.Content],
    locale: str,
) -> content_pb2.Content:
    """The content for a device ``locale`` (BCP 47): the exact tag first, then its
    language, else ``default``. Tags compare case-insensitively, ``_`` as ``-``."""
    if not locale or not translations:
        return default
    wanted = locale.replace("_", "-").lower()
    by_tag = {tag.replace("_", "-").lower(): content for tag, content in translations.items()}
    exact = by_tag.get(wanted)
    if exact is not None:
        return exact
    language = wanted.split("-", 1)[0]
    return by_tag.get(language, default)
