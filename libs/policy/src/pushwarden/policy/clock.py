"""Wall-clock rules as UTC instants: quiet windows, digest slots and the jitter hash.

A quiet window that starts on local day D covers ``[localize(D, start), localize(D', end))``
with D' = D + 1 when it crosses midnight. Edges inside a DST gap move to the end of the
gap, repeated wall times use their first occurrence (see ``zones.localize``), so a window
may be an hour shorter or longer on a transition night, and one lying wholly inside a gap
vanishes that night.

The instants of a set of quiet hours are memoised per zone and day in ``QuietTables``,
found by the identity of the ``QuietHours`` value (one dict lookup) and shared by every
equal value (so the copies a caller builds per recipient find them warm).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import NamedTuple
from zlib import crc32
from zoneinfo import ZoneInfo

from .memo import Memo, bounded_put
from .model import DigestPeriod, DigestSlot, QuietHours, QuietWindow
from .zones import day_bounds, day_split, local_ordinal, localize

__all__ = [
    "JITTER_MULTIPLIER",
    "MASK32",
    "NEVER",
    "SECONDS",
    "SEEDS",
    "TABLES_OF",
    "DayView",
    "FoundTables",
    "QuietDay",
    "QuietTables",
    "add_seconds",
    "day_in",
    "day_view",
    "digest_period",
    "jitter_seconds",
    "jitter_seed",
    "next_digest",
    "next_quiet",
    "posix_seconds",
    "quiet_day",
    "quiet_spans",
    "quiet_tables",
    "quiet_window_at",
    "view_at",
    "view_in",
    "windows_on",
]

Span = tuple[datetime, datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
NEVER = datetime.max.replace(tzinfo=UTC)
"""Later than any instant: what ``next_quiet`` returns when no window comes."""


class DayView(NamedTuple):
    """One local day as the engine reads it (unpack it once)."""

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


class QuietDay(NamedTuple):
    """One UTC day in a zone: instants before ``switch`` lie on ``before``'s local day,
    the others on ``after``'s (see ``zones.day_split``)."""

    switch: datetime
    before: DayView
    after: DayView


class QuietTables(NamedTuple):
    """The memoised instants of one set of quiet windows."""

    by_weekday: tuple[tuple[QuietWindow, ...], ...]
    """The windows that start on each weekday (Monday = 0)."""
    spans: dict[tuple[ZoneInfo, int], tuple[Span, ...]]
    """``quiet_spans`` per (zone, local day)."""
    views: dict[tuple[ZoneInfo, int], DayView]
    """``day_view`` per (zone, local day)."""
    nexts: dict[tuple[ZoneInfo, datetime], datetime]
    """``next_quiet`` per (zone, instant): deferrals land on a few window ends, shared by
    every user of a zone."""
    days: dict[ZoneInfo, dict[int, QuietDay | None]]
    """``quiet_day`` per zone, then UTC day (two lookups of an object and an int cost
    less than hashing a tuple)."""


class FoundTables(NamedTuple):
    """A ``TABLES_OF`` entry: the tables and the ``QuietHours`` value they were found for."""

    quiet: QuietHours
    tables: QuietTables


_TABLES: Memo[tuple[QuietWindow, ...], QuietTables] = Memo("quiet tables", 4096)
TABLES_OF: Memo[int, FoundTables] = Memo("quiet tables by identity", 4096)
"""``quiet_tables`` by ``id(quiet)``, with the ``QuietHours`` they were found for."""
_PER_DAY_LIMIT = 1 << 15
_ZONES_LIMIT = 1024


def quiet_tables(quiet: QuietHours) -> QuietTables:
    """The tables of ``quiet``: found by identity, else by its windows (memoised).

    The identity memo keeps the value it was keyed by, so its ``id`` is not reused while
    the entry lives.
    """
    known = TABLES_OF.data.get(id(quiet))
    if known is not None and known.quiet is quiet:
        return known.tables
    tables = _TABLES.data.get(quiet.windows)
    if tables is None:
        by_weekday = tuple(tuple(w for w in quiet.windows if day in w.weekdays) for day in range(7))
        tables = _TABLES.put(
            quiet.windows,
            QuietTables(by_weekday, {}, {}, {}, {}),
        )
    TABLES_OF.put(id(quiet), FoundTables(quiet, tables))
    return tables


def windows_on(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> tuple[Span, ...]:
    """UTC spans of the quiet windows that start on local day ``ordinal``."""
    day = date.fromordinal(ordinal)
    spans = []
    for window in quiet_tables(quiet).by_weekday[day.weekday()]:
        start = localize(zone, day, window.start)
        end_day = day + timedelta(days=1) if window.crosses_midnight else day
        end = localize(zone, end_day, window.end)
        if end > start:
            spans.append((start, end))
    return tuple(spans)


def quiet_spans(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> tuple[Span, ...]:
    """Spans of the windows that can contain an instant of local day ``ordinal``.

    Every window is shorter than a day, so only those starting on that day or the day
    before qualify. Memoised per zone and day.
    """
    memo = quiet_tables(quiet).spans
    key = (zone, ordinal)
    spans = memo.get(key)
    if spans is None:
        spans = windows_on(quiet, zone, ordinal - 1) + windows_on(quiet, zone, ordinal)
        bounded_put(memo, key, spans, _PER_DAY_LIMIT)
    return spans


def quiet_window_at(quiet: QuietHours, zone: ZoneInfo, at: datetime, ordinal: int) -> Span | None:
    """The quiet window containing ``at`` (local day ``ordinal``), latest-ending if several."""
    if not quiet.windows:
        return None
    found: Span | None = None
    for span in quiet_spans(quiet, zone, ordinal):
        if span[0] <= at < span[1] and (found is None or span[1] > found[1]):
            found = span
    return found


def next_quiet(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> datetime:
    """The first instant at or after ``at`` that lies inside a quiet window, looking
    eight local days ahead (every weekly window comes round within them); ``NEVER`` if
    none does (memoised)."""
    memo = quiet_tables(quiet).nexts
    found = memo.get((zone, at))
    if found is None:
        found = NEVER
        ordinal = local_ordinal(zone, at)
        for day in range(ordinal - 1, ordinal + 8):
            for start, end in quiet_spans(quiet, zone, day):
                if end > at:
                    found = min(found, max(start, at))
        bounded_put(memo, (zone, at), found, _PER_DAY_LIMIT)
    return found


def day_view(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> DayView:
    """Local day ``ordinal`` with its bounds and quiet spans (memoised)."""
    memo = quiet_tables(quiet).views
    key = (zone, ordinal)
    view = memo.get(key)
    if view is None:
        view = bounded_put(memo, key, _day_view(quiet, zone, ordinal), _PER_DAY_LIMIT)
    return view


def _day_view(quiet: QuietHours, zone: ZoneInfo, ordinal: int) -> DayView:
    spans = quiet_spans(quiet, zone, ordinal)
    start, end = day_bounds(zone, ordinal)
    ordered = sorted(spans)
    if not all(a[1] <= b[0] for a, b in pairwise(ordered)):
        return DayView(ordinal, start, end, spans, None, (), ())
    edges = tuple(edge for span in ordered for edge in span)
    clears = tuple(next_quiet(quiet, zone, stop) for _, stop in ordered)
    rooms = tuple(
        (clear - stop) // _SECOND for clear, (_, stop) in zip(clears, ordered, strict=True)
    )
    return DayView(ordinal, start, end, tuple(ordered), edges, clears, rooms)


def quiet_day(quiet: QuietHours, zone: ZoneInfo, utc_ordinal: int) -> QuietDay | None:
    """The local days of UTC day ``utc_ordinal`` in ``zone`` with ``quiet``'s spans.

    ``None`` on a UTC day in which the zone changes its offset: callers then use
    ``day_view`` of the exact local day (``zones.local_ordinal``). Memoised.
    """
    return day_in(quiet_tables(quiet), quiet, zone, utc_ordinal)


def day_in(
    tables: QuietTables, quiet: QuietHours, zone: ZoneInfo, utc_ordinal: int
) -> QuietDay | None:
    """``quiet_day``, memoised in ``tables`` (the tables of ``quiet`` a caller holds)."""
    per_zone = tables.days
    memo = per_zone.get(zone)
    if memo is None:
        memo = bounded_put(per_zone, zone, {}, _ZONES_LIMIT)
    if utc_ordinal in memo:
        return memo[utc_ordinal]
    split = day_split(zone, utc_ordinal)
    day: QuietDay | None = None
    if split is not None:
        switch, before, after = split
        day = QuietDay(switch, day_view(quiet, zone, before[0]), day_view(quiet, zone, after[0]))
    return bounded_put(memo, utc_ordinal, day, _PER_DAY_LIMIT)


def view_at(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> DayView:
    """The ``DayView`` of the local day of ``at`` (UTC)."""
    return view_in(quiet_tables(quiet), quiet, zone, at)


def view_in(tables: QuietTables, quiet: QuietHours, zone: ZoneInfo, at: datetime) -> DayView:
    """``view_at``, memoised in ``tables`` (the tables of ``quiet`` a caller holds)."""
    day = day_in(tables, quiet, zone, at.toordinal())
    if day is None:
        return day_view(quiet, zone, local_ordinal(zone, at))
    switch, before, after = day
    return before if at < switch else after


def posix_seconds(at: datetime) -> int:
    """The POSIX second of an aware instant."""
    return (at - _EPOCH) // _SECOND  # without a float round trip


# 64-bit odd multipliers: the golden ratio (spreads a window's seconds over all 64 bits)
# and the two of the splitmix64 finaliser; a 32-bit odd multiplier for the last step.
_MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
JITTER_MULTIPLIER = 0x2C1B3C6D
"""The odd 32-bit constant a user's CRC is multiplied by (``jitter_seconds``)."""

SEEDS: Memo[tuple[str, datetime], int] = Memo("jitter seeds", 1 << 15)
"""``jitter_seed`` per (message id, anchor)."""


def jitter_seed(message_id: str, anchor: datetime) -> int:
    """The 32-bit seed of one message and anchor instant, shared by every user (memoised).

    The message id is CRC-32'd, the anchor's POSIX second multiplied in, and two
    splitmix64 rounds mix the word; the low 32 bits are the seed.
    """
    key = (message_id, anchor)
    seed = SEEDS.data.get(key)
    if seed is None:
        word = crc32(message_id.encode()) ^ posix_seconds(anchor) * _GOLDEN
        word = word * _MIX1 & _MASK64
        word = (word ^ word >> 29) * _MIX2 & _MASK64
        seed = SEEDS.put(key, (word ^ word >> 32) & MASK32)
    return seed


def jitter_seconds(user_id: str, message_id: str, anchor: datetime, width: int) -> int:
    """A deterministic offset in ``[0, width)`` seconds for one user, message and anchor.

    A hash spreads a million users deferred to the same instant evenly over the width;
    the same inputs always give the same offset (never ``random``, never ``hash()``,
    which is salted per process). The user id is CRC-32'd starting from the seed of the
    message and anchor (``jitter_seed``, shared by all its users), the result multiplied
    by an odd constant modulo 2**32 (a bijection that moves the CRC's low-bit structure
    up), and the high bits pick the offset (multiply-shift, no modulo bias beyond one
    part in 2**32 / width). The engine inlines the same arithmetic.
    """
    if width <= 0:
        return 0
    seed = jitter_seed(message_id, anchor)
    return (crc32(user_id.encode(), seed) * JITTER_MULTIPLIER & MASK32) * width >> 32


SECONDS: tuple[timedelta, ...] = tuple(timedelta(seconds=n) for n in range(1 << 12))
"""Shared ``timedelta`` values for offsets under 4,096 s: building one per deferral costs
more than the addition itself."""


def add_seconds(at: datetime, seconds: int) -> datetime:
    """``at`` plus whole seconds (a shared ``timedelta`` for small offsets)."""
    if 0 <= seconds < len(SECONDS):
        return at + SECONDS[seconds]
    return at + timedelta(seconds=seconds)


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
