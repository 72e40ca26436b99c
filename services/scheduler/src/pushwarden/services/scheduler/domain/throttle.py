"""A campaign's throttle: at most ``sends_per_minute`` sends handed on per clock minute.

Pure. The slot is the minute being filled and how many sends it holds. A send the
policy allowed takes the next place: in the current minute while it has room (it goes
now), otherwise in the first later minute with room (it is deferred, reason THROTTLED,
to that minute's start, and its place stays reserved). A deferred send that comes back
within its reserved minute goes without taking a second place; one that comes back
later (a busy queue) takes a fresh place, so no minute ever holds more than the limit,
whoever decides (two processes lock the slot row in turn).

Places are handed out in order, so a campaign of N users spreads over N / limit
minutes with one deferral per held-back send, never a storm of re-deferrals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pushwarden.common.v1 import decision_pb2

MINUTE = timedelta(minutes=1)


def minute_of(instant: datetime) -> datetime:
    """The start of the clock minute holding ``instant``."""
    return instant.replace(second=0, microsecond=0)


@dataclass(slots=True)
class ThrottleSlot:
    """One campaign's slot: its limit, the minute being filled, the places it holds."""

    sends_per_minute: int
    slot_at: datetime | None = None
    used: int = 0

    def admit(self, now: datetime, reserved_for: datetime | None) -> datetime | None:
        """Place one allowed send decided at ``now``: None when it goes now, else the
        minute it is deferred to. ``reserved_for`` is the minute a THROTTLED deferral
        reserved for this send, if any."""
        minute = minute_of(now)
        if reserved_for is not None and reserved_for == minute:
            return None
        if self.slot_at is None or self.slot_at < minute:
            self.slot_at, self.used = minute, 0
        if self.used >= self.sends_per_minute:
            self.slot_at, self.used = self.slot_at + MINUTE, 0
        self.used += 1
        return None if self.slot_at == minute else self.slot_at

    def sent_in(self, minute: datetime) -> int:
        """How many places ``minute`` holds so far."""
        return self.used if self.slot_at == minute else 0


def throttle_step(
    slot: ThrottleSlot, now: datetime, later: datetime | None
) -> decision_pb2.TraceStep:
    """The trace step of a throttle check at ``now``: PASS with the places the minute
    holds (this send's included), or DEFER to ``later`` when the minute is full."""
    minute = minute_of(now)
    step = decision_pb2.TraceStep(
        check=decision_pb2.CHECK_THROTTLE,
        result=decision_pb2.STEP_RESULT_PASS if later is None else decision_pb2.STEP_RESULT_DEFER,
        throttle=decision_pb2.ThrottleDetail(
            sends_per_minute=slot.sends_per_minute,
            sent_this_minute=slot.sent_in(minute) if later is None else slot.sends_per_minute,
        ),
    )
    if later is not None:
        step.reason = decision_pb2.REASON_CODE_THROTTLED
        step.defer_until.FromDatetime(later)
        step.throttle.next_slot_at.FromDatetime(later)
    else:
        step.throttle.next_slot_at.FromDatetime(minute + MINUTE)
    return step
