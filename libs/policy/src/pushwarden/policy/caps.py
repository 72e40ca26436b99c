"""Frequency caps: counting a rule's window and finding when it frees.

Counts only ever fall as time passes (the history holds past sends; a later rolling window
or calendar period covers a subset of them), so the first instant a rule allows again is
also the start of every later instant it allows. The deferral search relies on this.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .model import CalendarWindow, CapRule, CapScope, Message
from .trace import CapStep, Check
from .zones import day_bounds, week_bounds

__all__ = ["calendar_free_at", "cap_free_at", "evaluate_cap", "rule_applies"]


def rule_applies(rule: CapRule, message: Message) -> bool:
    """Whether ``rule`` limits ``message`` (rules only ever limit marketing messages)."""
    target = rule.target_id
    scope = rule.scope
    if scope is CapScope.CAMPAIGN:
        # Keyed by campaign id: a message with only a trigger is not a campaign's.
        campaign = message.campaign_id
        return campaign is not None and (target is None or target == campaign)
    if target is None:
        return True
    return scope is CapScope.CATEGORY and target == message.category.category_id


_new = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path
_CAP = Check.CAP  # Enum class attribute access is slow in 3.11


def evaluate_cap(
    rule: CapRule, times: Sequence[datetime], now: datetime, zone: ZoneInfo | None, ordinal: int
) -> CapStep:
    """The rule's numbers at ``now`` (local day ``ordinal``) over the instants it counts."""
    window = rule.window
    limit = rule.limit
    if isinstance(window, timedelta):
        start = now - window
        first = bisect_right(times, start)
        count = len(times) - first
        if count == 0:
            return _new(CapStep, (_CAP, True, rule, 0, limit, start, None, None))
        oldest_leaves = times[first] + window
        if count < limit:
            return _new(CapStep, (_CAP, True, rule, count, limit, start, oldest_leaves, None))
        frees = times[first + count - limit] + window
        return _new(CapStep, (_CAP, False, rule, count, limit, start, oldest_leaves, frees))
    assert zone is not None, "calendar windows need the recipient's zone"
    day = window is CalendarWindow.DAY
    start, end = day_bounds(zone, ordinal) if day else week_bounds(zone, ordinal)
    count = len(times) - bisect_left(times, start)
    if count < limit:
        resets = end if count else None
        return _new(CapStep, (_CAP, True, rule, count, limit, start, resets, None))
    frees = cap_free_at(rule, times, end, zone)
    return _new(CapStep, (_CAP, False, rule, count, limit, start, end, frees))


def cap_free_at(
    rule: CapRule, times: Sequence[datetime], at: datetime, zone: ZoneInfo | None
) -> datetime:
    """The first instant at or after ``at`` at which ``rule`` allows one more send."""
    window = rule.window
    limit = rule.limit
    if isinstance(window, timedelta):
        first = bisect_right(times, at - window)
        count = len(times) - first
        if count < limit:
            return at
        return times[first + count - limit] + window
    assert zone is not None, "calendar windows need the recipient's zone"
    return calendar_free_at(window is CalendarWindow.DAY, limit, times, at, zone)


def calendar_free_at(
    calendar_day: bool, limit: int, times: Sequence[datetime], at: datetime, zone: ZoneInfo
) -> datetime:
    """``cap_free_at`` for a calendar day (or ISO week) rule of ``limit`` sends."""
    # Only sends dated in the future can keep a later period full; loop until one is not.
    bounds = day_bounds if calendar_day else week_bounds
    while True:
        start, end = bounds(zone, at.astimezone(zone).toordinal())
        if len(times) - bisect_left(times, start) < limit:
            return at
        at = end
