"""Wall-clock rules as UTC instants: quiet windows, digest slots and the jitter hash.

A quiet window that starts on local day D covers ``[localize(D, start), localize(D', end))``
with D' = D + 1 when it crosses midnight. Edges inside a DST gap move to the end of the
gap, repeated wall times use their first occurrence (see ``zones.localize``), so a window
may be an hour shorter or longer on a transition night, and one lying wholly inside a gap
vanishes that night.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import NamedTuple
from zlib import crc32
from zoneinfo import ZoneInfo

from .model import DigestPeriod, DigestSlot, QuietHours
from .zones import day_bounds, day_split, local_ordinal, localize

__all__ = [
    "NEVER",
    "DayView",
    "QuietDay",
    "add_seconds",
    "day_view",
    "digest_period",
    "jitter_seconds",
    "jitter_seed",
    "next_digest",
    "next_quiet",
    "posix_seconds",
    "quiet_day",
    "quiet_spans",
    "quiet_window_at",
    "view_at",
    "windows_on",
]

Span = tuple[datetime, datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def windows_on(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> tuple[Span, ...]:
    """UTC spans of the quiet windows that start on local day ``ordinal``."""
    day = date.fromordinal(ordinal)
    spans = []
    for window in quiet.by_weekday[day.weekday()]:
        start = localize(zone, day, window.start)
        end_day = day + timedelta(days=1) if window.crosses_midnight else day
        end = localize(zone, end_day, window.end)
        if end > start:
            spans.append((start, end))
    return tuple(spans)


_SPANS_CACHE_LIMIT = 1 << 15


def quiet_spans(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> tuple[Span, ...]:
    """Spans of the windows that can contain an instant of local day ``ordinal``.

    Every window is shorter than a day, so only those starting on that day or the day
    before qualify. Memoised on the ``QuietHours`` object (keyed by zone and day).
    """
    cache = quiet.spans_cache
    key = (zone, ordinal)
    try:
        return cache[key]
    except KeyError:
        pass
    spans = windows_on(quiet, zone, ordinal - 1) + windows_on(quiet, zone, ordinal)
    if len(cache) >= _SPANS_CACHE_LIMIT:
        cache.clear()
    cache[key] = spans
    return spans


class DayView(NamedTuple):
    """One local day as the engine reads it (unpack it once; its fields are positional)."""

    ordinal: int
    start: datetime
    end: datetime
    spans: tuple[Span, ...]
    """The quiet spans that can contain an instant of the day, in order when disjoint."""
    edges: tuple[datetime, ...] | None
    """When the spans are disjoint, their edges in order (one ``bisect`` finds the span
    holding an instant); else None."""
    clears: tuple[datetime, ...]
    """For each span when disjoint: the first quiet instant at or after its end."""
    rooms: tuple[int, ...]
    """For each span when disjoint: whole seconds from its end to that instant (how far
    a deferral to the span's end may be spread)."""


QuietDay = tuple[datetime, DayView, DayView]
"""One UTC day: instants before the first item are on the second's local day, the others
on the third's (see ``zones.day_split``)."""

_DAYS_CACHE_LIMIT = 1 << 15
NEVER = datetime.max.replace(tzinfo=UTC)
"""Later than any instant: what ``next_quiet`` returns when no window comes."""


def next_quiet(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> datetime:
    """The first instant at or after ``at`` that lies inside a quiet window, looking
    eight local days ahead (every weekly window comes round within them); ``NEVER`` if
    none does."""
    found = NEVER
    ordinal = local_ordinal(zone, at)
    for day in range(ordinal - 1, ordinal + 8):
        for start, end in quiet_spans(quiet, zone, day):
            if end > at:
                found = min(found, max(start, at))
    return found


def day_view(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> DayView:
    """Local day ``ordinal`` with its bounds and quiet spans (memoised on ``quiet``)."""
    cache = quiet.views_cache
    key = (zone, ordinal)
    try:
        return cache[key]
    except KeyError:
        pass
    view = _day_view(quiet, zone, ordinal)
    if len(cache) >= _DAYS_CACHE_LIMIT:
        cache.clear()
    cache[key] = view
    return view


def _day_view(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> DayView:
    spans = quiet_spans(quiet, zone, ordinal)
    start, end = day_bounds(zone, ordinal)
    ordered = sorted(spans)
    if not all(a[1] <= b[0] for a, b in pairwise(ordered)):
        return DayView(ordinal, start, end, spans, None, (), ())
    edges = tuple(edge for span in ordered for edge in span)
    # A window ends on its own local day or the next one (windows last under a day).
    clears = tuple(next_quiet(quiet, zone, stop) for _, stop in ordered)
    rooms = tuple(
        (clear - stop) // _SECOND for clear, (_, stop) in zip(clears, ordered, strict=True)
    )
    return DayView(ordinal, start, end, tuple(ordered), edges, clears, rooms)


def quiet_day(quiet: QuietHours, zone: ZoneInfo, utc_ordinal: int) -> QuietDay | None:
    """The local days of UTC day ``utc_ordinal`` in ``zone`` with ``quiet``'s spans.

    Memoised on the ``QuietHours`` (per zone, then UTC day: two lookups of an object and
    an int cost less than hashing a tuple key). ``None`` on a UTC day in
    which the zone changes its offset: callers then use ``day_view`` of the exact local
    day (``zones.local_ordinal``).
    """
    cache = quiet.days_cache.get(zone)
    if cache is None:
        cache = quiet.days_cache[zone] = {}
    try:
        return cache[utc_ordinal]
    except KeyError:
        pass
    split = day_split(zone, utc_ordinal)
    day: QuietDay | None = None
    if split is not None:
        switch, before, after = split
        day = (switch, day_view(quiet, zone, before[0]), day_view(quiet, zone, after[0]))
    if len(cache) >= _DAYS_CACHE_LIMIT:
        cache.clear()
    cache[utc_ordinal] = day
    return day


def view_at(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> DayView:
    """The ``DayView`` of the local day of ``at`` (UTC)."""
    day = quiet_day(quiet, zone, at.toordinal())
    if day is None:
        return day_view(quiet, zone, local_ordinal(zone, at))
    return day[1] if at < day[0] else day[2]


def quiet_window_at(quiet: QuietHours, zone: ZoneInfo, at: datetime, ordinal: int) -> Span | None:
    """The quiet window containing ``at`` (local day ``ordinal``), latest-ending if several."""
    if not quiet.windows:
        return None
    spans = quiet.spans_cache.get((zone, ordinal))
    if spans is None:
        spans = quiet_spans(quiet, zone, ordinal)
    found: Span | None = None
    for span in spans:
        if span[0] <= at < span[1] and (found is None or span[1] > found[1]):
            found = span
    return found


def posix_seconds(at: datetime) -> int:
    """The POSIX second of an aware instant."""
    return (at - _EPOCH) // _SECOND  # without a float round trip


# 64-bit odd multipliers: the golden ratio (spreads a window's seconds over all 64 bits)
# and the two of the splitmix64 finaliser; a 32-bit odd multiplier for the last step.
_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_MIX32 = 0x2C1B3C6D

_SEEDS: dict[tuple[str, datetime], int] = {}
_SEEDS_LIMIT = 1 << 15


def jitter_seed(message_id: str, anchor: datetime) -> int:
    """The 32-bit seed of one message and window end, shared by every user (memoised).

    The message id is CRC-32'd, the window's POSIX second multiplied in, and two
    splitmix64 rounds mix the word; the low 32 bits are the seed.
    """
    key = (message_id, anchor)
    try:
        return _SEEDS[key]
    except KeyError:
        pass
    word = crc32(message_id.encode()) ^ posix_seconds(anchor) * _GOLDEN
    word = word * _MIX1 & _MASK64
    word = (word ^ word >> 29) * _MIX2 & _MASK64
    seed = (word ^ word >> 32) & _MASK32
    if len(_SEEDS) >= _SEEDS_LIMIT:
        _SEEDS.clear()
    _SEEDS[key] = seed
    return seed


def jitter_seconds(user_id: str, message_id: str, anchor: datetime, span: int) -> int:
    """A deterministic offset in ``[0, span)`` seconds for one user, message and window.

    A hash spreads a million users deferred to the same window end evenly over the span;
    the same inputs always give the same offset (never ``random``, never ``hash()``, which
    is salted per process). The user id is CRC-32'd starting from the seed of the
    message and window (``jitter_seed``, computed once per message and window and shared
    by all its users), the result multiplied by an odd constant modulo 2**32 (a
    bijection that moves the CRC's low-bit structure up), and the high bits pick the
    offset (multiply-shift, no modulo bias beyond one part in 2**32 / span). Every
    operation stays within 64 bits; the engine inlines the same arithmetic.
    """
    if span <= 0:
        return 0
    seed = _SEEDS.get((message_id, anchor))
    if seed is None:
        seed = jitter_seed(message_id, anchor)
    return (crc32(user_id.encode(), seed) * _MIX32 & _MASK32) * span >> 32


def digest_period(slot: DigestSlot, zone: ZoneInfo, at: datetime) -> tuple[date, datetime]:
    """The local day and UTC instant of the latest digest slot at or before ``at``."""
    day = at.astimezone(zone).date()
    step = 1
    if slot.period is DigestPeriod.WEEKLY:
        day -= timedelta(days=(day.weekday() - slot.weekday) % 7)
        step = 7
    start = localize(zone, day, slot.at)
    if start > at:
        day -= timedelta(days=step)
        start = localize(zone, day, slot.at)
    return day, start


def next_digest(slot: DigestSlot, zone: ZoneInfo, day: date) -> tuple[date, datetime]:
    """The slot after the one on local ``day``."""
    nxt = day + timedelta(days=7 if slot.period is DigestPeriod.WEEKLY else 1)
    return nxt, localize(zone, nxt, slot.at)


_SECONDS: list[timedelta] = []
_SECONDS_LIMIT = 1 << 14


def add_seconds(at: datetime, seconds: int) -> datetime:
    """``at`` plus whole seconds, using shared ``timedelta`` values for jitter-sized ones.

    Building a ``timedelta`` per deferral costs more than the addition itself.
    """
    if 0 <= seconds < len(_SECONDS):
        return at + _SECONDS[seconds]
    if 0 <= seconds < _SECONDS_LIMIT:
        _SECONDS.extend(timedelta(seconds=n) for n in range(len(_SECONDS), seconds + 1))
        return at + _SECONDS[seconds]
    return at + timedelta(seconds=seconds)
