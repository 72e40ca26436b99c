"""Pushwarden's policy core: may this message go to this user now, later, or never?

Pure functions over immutable values: no I/O, no clock, no randomness. See README.md.
"""

from .arbitration import Arbitration, arbitrate, arbitration_order
from .engine import Budget, decide, remaining_budget
from .explain import explain, format_duration, format_instant
from .history import ContactHistory
from .model import (
    ALL_WEEKDAYS,
    NO_QUIET_HOURS,
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    QuietHours,
    QuietWindow,
    Recipient,
    Rules,
)
from .trace import (
    CapStep,
    Check,
    Decision,
    DigestStep,
    GateStep,
    Hop,
    Outcome,
    QuietStep,
    Reason,
    ScheduleStep,
    TraceStep,
    ZoneStep,
)
from .zones import ZoneSource, localize, resolve_zone

__all__ = [
    "ALL_WEEKDAYS",
    "NO_QUIET_HOURS",
    "Arbitration",
    "Budget",
    "CalendarWindow",
    "CapAction",
    "CapRule",
    "CapScope",
    "CapStep",
    "Category",
    "Check",
    "ContactEntry",
    "ContactHistory",
    "Decision",
    "DigestPeriod",
    "DigestSlot",
    "DigestStep",
    "FrequencyPreference",
    "GateStep",
    "Hop",
    "Message",
    "MessageKind",
    "Outcome",
    "QuietHours",
    "QuietStep",
    "QuietWindow",
    "Reason",
    "Recipient",
    "Rules",
    "ScheduleStep",
    "TraceStep",
    "ZoneSource",
    "ZoneStep",
    "arbitrate",
    "arbitration_order",
    "decide",
    "explain",
    "format_duration",
    "format_instant",
    "localize",
    "remaining_budget",
    "resolve_zone",
]
