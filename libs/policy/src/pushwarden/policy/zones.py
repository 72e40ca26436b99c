"""Time-zone helpers: the cached zone lookup, the fallback chain and DST-safe localisation.

Local wall times that do not exist (spring-forward gap) move to the first instant after
the gap, i.e. the transition instant itself. Local times that occur twice (fall-back) use
the first occurrence (``fold=0``). Both choices apply to every wall-clock edge the policy
computes: quiet-window starts and ends, calendar-day and ISO-week starts, digest slots.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
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


_ZONES: dict[str | None, ZoneInfo | None] = {}  # None is never a key, but may be looked up


def get_zone(name: str | None) -> ZoneInfo | None:
    """Return the cached ``ZoneInfo`` for an IANA name, or ``None`` if unknown or empty."""
    if not name:
        return None
    try:
        return _ZONES[name]
    except KeyError:
        pass
    try:
        zone: ZoneInfo | None = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    # Only the valid and invalid names seen so far are kept: the IANA set is finite and
    # invalid names come from a small set of bad profile values.
    if len(_ZONES) < 4096:
        _ZONES[name] = zone
    return zone


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


@lru_cache(maxsize=1 << 16)
def localize(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The UTC instant of local wall time ``wall`` on ``day`` in ``zone``.

    A wall time inside a DST gap gives the first instant after the gap; a repeated wall
    time gives its first occurrence.
    """
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

_SPLITS: dict[ZoneInfo, dict[int, DaySplit | None]] = {}


def day_split(zone: ZoneInfo, utc_ordinal: int) -> DaySplit | None:
    """The local days UTC day ``utc_ordinal`` spans in ``zone``, memoised per zone.

    ``None`` on the rare UTC day in which the zone changes its offset (callers then
    convert exactly, see ``local_ordinal``). Otherwise the offset holds all day, so the
    local date changes once, at the UTC instant of the next local midnight (which may
    fall after the UTC day ends: then every instant is on the first local day).
    """
    memo = _SPLITS.get(zone)
    if memo is None:
        memo = _SPLITS[zone] = {}
    try:
        return memo[utc_ordinal]
    except KeyError:
        pass
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
    if len(memo) >= _SPLITS_LIMIT:
        memo.clear()
    memo[utc_ordinal] = split
    return split


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


_Bounds = tuple[datetime, datetime]
_DAYS: dict[tuple[ZoneInfo, int], _Bounds] = {}
_WEEKS: dict[tuple[ZoneInfo, int], _Bounds] = {}
_BOUNDS_LIMIT = 1 << 16


def day_bounds(zone: ZoneInfo, ordinal: int) -> _Bounds:
    """``[start, end)`` of local day ``ordinal`` as UTC instants (memoised)."""
    key = (zone, ordinal)
    try:
        return _DAYS[key]
    except KeyError:
        pass
    day = date.fromordinal(ordinal)
    bounds = (day_start(zone, day), day_start(zone, day + timedelta(days=1)))
    if len(_DAYS) >= _BOUNDS_LIMIT:
        _DAYS.clear()
    _DAYS[key] = bounds
    return bounds


def week_bounds(zone: ZoneInfo, ordinal: int) -> _Bounds:
    """``[start, end)`` of the ISO week containing local day ``ordinal`` (memoised)."""
    key = (zone, ordinal)
    try:
        return _WEEKS[key]
    except KeyError:
        pass
    day = date.fromordinal(ordinal)
    bounds = (week_start(zone, day), week_start(zone, day + timedelta(days=7)))
    if len(_WEEKS) >= _BOUNDS_LIMIT:
        _WEEKS.clear()
    _WEEKS[key] = bounds
    return bounds
