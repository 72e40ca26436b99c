"""Output types: the decision and its structured trace.

These are ``NamedTuple`` values rather than frozen dataclasses on purpose: a decision is
built on the hot path (hundreds of thousands per second) and a frozen dataclass's
``__init__`` costs about twice as much as a tuple's. They are just as immutable. The trace
holds numbers and instants only; ``explain`` renders text when someone asks.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import NamedTuple

from .model import CapRule
from .zones import ZoneSource

__all__ = [
    "CapStep",
    "Check",
    "Decision",
    "DigestStep",
    "GateStep",
    "Hop",
    "Outcome",
    "QuietStep",
    "Reason",
    "ScheduleStep",
    "TraceStep",
    "ZoneStep",
]


class Outcome(enum.Enum):
    """Send now, send later, or never."""

    ALLOW = "ALLOW"
    DEFER = "DEFER"
    DROP = "DROP"


class Reason(enum.Enum):
    """Why a message was deferred or dropped."""

    ERASED = "ERASED"
    SUPPRESSED = "SUPPRESSED"
    HOLDOUT = "HOLDOUT"
    DUPLICATE = "DUPLICATE"
    EXPIRED = "EXPIRED"
    OPTED_OUT = "OPTED_OUT"
    CATEGORY_OPTED_OUT = "CATEGORY_OPTED_OUT"
    TOPIC_OPTED_OUT = "TOPIC_OPTED_OUT"
    NO_PERMISSION = "NO_PERMISSION"
    NO_DEVICE = "NO_DEVICE"
    NO_TIMEZONE = "NO_TIMEZONE"
    CAPPED = "CAPPED"
    QUIET_HOURS = "QUIET_HOURS"
    DIGEST = "DIGEST"


class Check(enum.Enum):
    """The rule a trace step reports on, in evaluation order."""

    ERASED = "ERASED"
    SUPPRESSION = "SUPPRESSION"
    HOLDOUT = "HOLDOUT"
    DUPLICATE = "DUPLICATE"
    EXPIRY = "EXPIRY"
    CHANNEL_CONSENT = "CHANNEL_CONSENT"
    MARKETING_CONSENT = "MARKETING_CONSENT"
    CATEGORY_CONSENT = "CATEGORY_CONSENT"
    TOPIC_CONSENT = "TOPIC_CONSENT"
    OS_PERMISSION = "OS_PERMISSION"
    DEVICES = "DEVICES"
    TRANSACTIONAL_EXEMPTION = "TRANSACTIONAL_EXEMPTION"
    ZONE = "ZONE"
    CAP = "CAP"
    QUIET_HOURS = "QUIET_HOURS"
    DIGEST = "DIGEST"
    SCHEDULE = "SCHEDULE"


class GateStep(NamedTuple):
    """A yes/no check on facts about the recipient or the message."""

    check: Check
    passed: bool


class ZoneStep(NamedTuple):
    """Which zone the wall-clock rules used and where it came from."""

    check: Check
    passed: bool
    source: ZoneSource
    zone: str | None


class CapStep(NamedTuple):
    """One cap rule at ``now``: ``in_window`` sends in the window against ``limit``.

    Rolling windows count sends after ``window_start``; calendar windows count sends at or
    after it. ``oldest_leaves_at`` is when the oldest counted send leaves the window (for a
    calendar window: when the window resets); ``frees_at`` is, for an exceeded rule, the
    first instant at which it allows again.
    """

    check: Check
    passed: bool
    rule: CapRule
    in_window: int
    limit: int
    window_start: datetime
    oldest_leaves_at: datetime | None
    frees_at: datetime | None


class QuietStep(NamedTuple):
    """Quiet hours at ``at`` (the decision's ``now``, UTC); the window bounds are set when
    it lies inside one. ``windows`` is how many windows the user's quiet hours have."""

    check: Check
    passed: bool
    at: datetime
    window_start: datetime | None
    window_end: datetime | None
    windows: int


class DigestStep(NamedTuple):
    """A DIGEST user's slot: open from ``opens_at`` until ``closes_at`` once per period."""

    check: Check
    passed: bool
    period_start: datetime
    opens_at: datetime
    closes_at: datetime
    sent_in_period: int


class Hop(NamedTuple):
    """One move of the deferral search: which rule pushed the instant, and to where."""

    check: Check
    to: datetime
    jitter_s: int


class ScheduleStep(NamedTuple):
    """The search for the earliest instant every rule allows (``until``; None if none)."""

    check: Check
    passed: bool
    until: datetime | None
    hops: tuple[Hop, ...]


TraceStep = GateStep | ZoneStep | CapStep | QuietStep | DigestStep | ScheduleStep


class Decision(NamedTuple):
    """The policy's answer: ALLOW, DEFER until an instant, or DROP, with the reason."""

    outcome: Outcome
    reason: Reason | None
    until: datetime | None
    trace: tuple[TraceStep, ...]

    @property
    def allowed(self) -> bool:
        """Whether the message may go now."""
        return self.outcome is Outcome.ALLOW
