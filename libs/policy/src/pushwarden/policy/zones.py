"""Time-zone helpers: the cached zone lookup, the fallback chain and DST-safe localisation.

Local wall times that do not exist (spring-forward gap) move to the first instant after
the gap, i.e. the transition instant itself. Local times that occur twice (fall-back) use
the first occurrence (``fold=0``). Both choices apply to every wall-clock edge the policy
computes: quiet-window starts and ends, calendar-day and ISO-week starts, digest slots.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .memo import Memo, bounded_put

__all__ = [
    "ZONES",
    "Bounds",
    "DaySplit",
    "LocalDay",
    "ZoneSource",
    "day_bounds",
    "day_split",
    "day_start",
    "get_zone",
    "local_day",
    "local_ordinal",
    "localize",
    "resolve_zone",
    "week_bounds",
    "week_start",
]


class ZoneSource(enum.Enum):
    """Where the zone used for a decision came from."""

    PROFILE = "PROFILE"
    DEVICE = "DEVICE"
    APP_DEFAULT = "APP_DEFAULT"
    NONE = "NONE"


ZONES: Memo[str | None, ZoneInfo | None] = Memo("zones", 4096)
"""Zones by IANA name (None for an invalid name); None is never a key but may be looked
up, so the hot path can try a missing profile zone without a test of its own."""


def get_zone(name: str | None) -> ZoneInfo | None:
    """Return the cached ``ZoneInfo`` for an IANA name, or ``None`` if unknown or empty."""
    if not name:
        return None
    known = ZONES.data
    if name in known:
        return known[name]
    try:
        zone: ZoneInfo | None = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    return ZONES.put(name, zone)


def resolve_zone(
    profile: str | None, device: str | None, app_default: str | None
) -> tuple[ZoneSource, ZoneInfo | None]:
    """Walk the chain profile zone → device zone → app default; never falls back to UTC.

    A name that is not a valid IANA key is skipped like a missing one.
    """
    zone = get_zone(profile)
    if zone is not None:
        return ZoneSource.PROFILE, zone
    zone = get_zone(device)
    if zone is not None:
        return ZoneSource.DEVICE, zone
    zone = get_zone(app_default)
    if zone is not None:
        return ZoneSource.APP_DEFAULT, zone
    return ZoneSource.NONE, None


def _transition_after(lo: datetime, hi: datetime, zone: ZoneInfo) -> datetime:
    """First whole second in ``(lo, hi]`` whose UTC offset differs from ``lo``'s."""
    before = lo.astimezone(zone).utcoffset()
    lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo_s = mid
        else:
            hi_s = mid
    return datetime.fromtimestamp(hi_s, UTC)


_LOCALIZED: Memo[tuple[ZoneInfo, date, time], datetime] = Memo("localize", 1 << 16)


def localize(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The UTC instant of local wall time ``wall`` on ``day`` in ``zone`` (memoised).

    A wall time inside a DST gap gives the first instant after the gap; a repeated wall
    time gives its first occurrence.
    """
    key = (zone, day, wall)
    found = _LOCALIZED.data.get(key)
    if found is None:
        found = _LOCALIZED.put(key, _localize(zone, day, wall))
    return found


def _localize(zone: ZoneInfo, day: date, wall: time) -> datetime:
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # In a gap fold=0 and fold=1 map to the two ends of the gap, in an order that depends
    # on the direction of the jump; the transition lies between them.
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    lo, hi = min(first, second), max(first, second)
    return _transition_after(lo, hi, zone)


_MIDNIGHT = time(0, 0)

_SPLITS_LIMIT = 1 << 12
_LAST_TICK = timedelta(days=1, microseconds=-1)


def utc_day_offset(zone: ZoneInfo, utc_ordinal: int) -> timedelta | None:
    """The zone's UTC offset throughout UTC day ``utc_ordinal``, or None if it changes.

    Offsets change at most once a day in every IANA zone, so the same offset at the first
    and the last microsecond of the day holds all day. Not memoised: ``day_split``, its
    caller, is.
    """
    first = datetime.fromordinal(utc_ordinal).replace(tzinfo=UTC)
    offset = first.astimezone(zone).utcoffset()
    if offset != (first + _LAST_TICK).astimezone(zone).utcoffset():
        return None
    return offset


LocalDay = tuple[int, datetime, datetime]
"""A local day: its proleptic ordinal and its ``[start, end)`` as UTC instants."""

DaySplit = tuple[datetime, LocalDay, LocalDay]
"""How one UTC day falls on local days: instants before the first item are on the
second's day, the others on the third's."""

_SPLITS: Memo[ZoneInfo, dict[int, DaySplit | None]] = Memo("day splits", 1024)


def day_split(zone: ZoneInfo, utc_ordinal: int) -> DaySplit | None:
    """The local days UTC day ``utc_ordinal`` spans in ``zone``, memoised per zone.

    ``None`` on the rare UTC day in which the zone changes its offset (callers then
    convert exactly, see ``local_ordinal``). Otherwise the offset holds all day, so the
    local date changes once, at the UTC instant of the next local midnight (which may
    fall after the UTC day ends: then every instant is on the first local day).
    """
    memo = _SPLITS.data.get(zone)
    if memo is None:
        memo = _SPLITS.put(zone, {})
    if utc_ordinal in memo:
        return memo[utc_ordinal]
    offset = utc_day_offset(zone, utc_ordinal)
    split: DaySplit | None = None
    if offset is not None:
        first = (datetime.fromordinal(utc_ordinal) + offset).toordinal()
        switch = datetime.fromordinal(first + 1).replace(tzinfo=UTC) - offset
        split = (
            switch,
            (first, *day_bounds(zone, first)),
            (first + 1, *day_bounds(zone, first + 1)),
        )
    return bounded_put(memo, utc_ordinal, split, _SPLITS_LIMIT)


def local_day(zone: ZoneInfo, at: datetime) -> LocalDay:
    """The local day of ``at`` (in UTC) in ``zone``: ordinal and bounds."""
    split = day_split(zone, at.toordinal())
    if split is None:
        ordinal = at.astimezone(zone).toordinal()
        return (ordinal, *day_bounds(zone, ordinal))
    return split[1] if at < split[0] else split[2]


def local_ordinal(zone: ZoneInfo, at: datetime) -> int:
    """The proleptic ordinal of ``at``'s local date in ``zone`` (``at`` in UTC).

    Compares ``at`` with the memoised instant of its UTC day's local midnight
    (``day_split``), which saves converting each instant; on the rare UTC day in which
    the zone changes its offset, the instant is converted exactly.
    """
    split = day_split(zone, at.toordinal())
    if split is None:
        return at.astimezone(zone).toordinal()
    return split[1][0] if at < split[0] else split[2][0]


def day_start(zone: ZoneInfo, day: date) -> datetime:
    """The first instant of local ``day`` (after the gap if midnight does not exist)."""
    return localize(zone, day, _MIDNIGHT)


def week_start(zone: ZoneInfo, day: date) -> datetime:
    """The first instant of the ISO week (Monday) containing local ``day``."""
    return localize(zone, day - timedelta(days=day.weekday()), _MIDNIGHT)


class Bounds(NamedTuple):
    """A local day's (ISO week's) ``[start, end)`` as UTC instants."""

    start: datetime
    end: datetime


_DAYS: Memo[tuple[ZoneInfo, int], Bounds] = Memo("day bounds", 1 << 16)
_WEEKS: Memo[tuple[ZoneInfo, int], Bounds] = Memo("week bounds", 1 << 16)


def day_bounds(zone: ZoneInfo, ordinal: int) -> Bounds:
    """``[start, end)`` of local day ``ordinal`` as UTC instants (memoised)."""
    key = (zone, ordinal)
    found = _DAYS.data.get(key)
    if found is not None:
        return found
    day = date.fromordinal(ordinal)
    return _DAYS.put(key, Bounds(day_start(zone, day), day_start(zone, day + timedelta(days=1))))


def week_bounds(zone: ZoneInfo, ordinal: int) -> Bounds:
    """``[start, end)`` of the ISO week containing local day ``ordinal`` (memoised)."""
    key = (zone, ordinal)
    found = _WEEKS.data.get(key)
    if found is not None:
        return found
    day = date.fromordinal(ordinal)
    return _WEEKS.put(key, Bounds(week_start(zone, day), week_start(zone, day + timedelta(days=7))))
