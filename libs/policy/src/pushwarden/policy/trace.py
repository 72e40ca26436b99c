"""Output types: the decision and its structured trace.

These are ``NamedTuple`` values rather than frozen dataclasses on purpose: a decision is
built on the hot path (hundreds of thousands per second) and a frozen dataclass's
``__init__`` costs about twice as much as a tuple's. They are just as immutable. The trace
holds numbers and instants only; ``explain`` renders text when someone asks.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import NamedTuple, cast, overload

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
    "Trace",
    "TraceStep",
    "ZoneStep",
    "lazy_trace",
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
    FREQUENCY_PREFERENCE = "FREQUENCY_PREFERENCE"
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


_Expander = Callable[[tuple[object, ...]], tuple["TraceStep", ...]]


class Trace:
    """A decision's steps, in evaluation order: a read-only sequence of ``TraceStep``.

    ``decide`` keeps the hot path free of per-step objects: it returns the trace in a
    compact form (the decision's own inputs, which are immutable values, and its answer)
    and the steps are built the first time anyone reads them, by the reference evaluator
    (``reference.evaluate``), checking that it reaches the same outcome, reason and
    instant. Reading
    a trace is therefore as exact as building it eagerly, and costs a few microseconds
    once. Gate drops and untimed transactional allows share ready-made traces.

    Build one with ``Trace.of(steps)`` or ``Trace.lazy(expand, source)``. It is a plain
    class registered as a ``Sequence`` (an ABC subclass costs twice as much to create).
    """

    __slots__ = ("_source", "_steps")

    _steps: tuple[TraceStep, ...]
    """Unset until built: a lazy trace sets ``_source`` alone."""
    _source: tuple[object, ...]

    @classmethod
    def of(cls, steps: tuple[TraceStep, ...]) -> Trace:
        """A trace whose steps are already built."""
        trace = cls()
        trace._steps = steps
        trace._source = ()
        return trace

    @classmethod
    def lazy(cls, expand: _Expander, source: tuple[object, ...]) -> Trace:
        """A trace built on first read by ``expand(source)``."""
        trace = cls()
        trace._source = (expand, *source)
        return trace

    @property
    def steps(self) -> tuple[TraceStep, ...]:
        """The steps as a tuple, built on first use."""
        try:
            return self._steps
        except AttributeError:  # a lazy trace's first read
            expand = cast(_Expander, self._source[0])
            steps = self._steps = expand(self._source[1:])
            self._source = ()
            return steps

    @property
    def expanded(self) -> bool:
        """Whether the steps have been built (for tests and the benchmark)."""
        return hasattr(self, "_steps")

    @overload
    def __getitem__(self, index: int) -> TraceStep: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[TraceStep, ...]: ...

    def __getitem__(self, index: int | slice) -> TraceStep | tuple[TraceStep, ...]:
        return self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[TraceStep]:
        return iter(self.steps)

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __reversed__(self) -> Iterator[TraceStep]:
        return reversed(self.steps)

    def index(self, step: object) -> int:
        """Position of the first step equal to ``step``."""
        return self.steps.index(step)

    def count(self, step: object) -> int:
        """How many steps equal ``step``."""
        return self.steps.count(step)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return self.steps == other.steps
        if isinstance(other, tuple):
            return self.steps == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.steps)

    def __repr__(self) -> str:
        return f"Trace({self.steps!r})"


Sequence.register(Trace)


def lazy_trace(*source: object) -> Trace:
    """``Trace.lazy(source[0], source[1:])`` with the call's own argument tuple as the
    source: the engine's timed decisions call this once each."""
    trace = Trace()
    trace._source = source
    return trace


class Decision(NamedTuple):
    """The policy's answer: ALLOW, DEFER until an instant, or DROP, with the reason.

    ``until`` is set for a DEFER only (ALLOW and DROP carry None); ``reason`` is None for
    an ALLOW only.

    ``trace`` is every check evaluated with its numbers (a ``Trace``, built on first read).
    """

    outcome: Outcome
    reason: Reason | None
    until: datetime | None
    trace: Trace

    @property
    def allowed(self) -> bool:
        """Whether the message may go now."""
        return self.outcome is Outcome.ALLOW
