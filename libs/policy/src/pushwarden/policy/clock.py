"""Wall-clock rules as UTC instants: quiet windows, digest slots and the jitter hash.

A quiet window that starts on local day D covers ``[localize(D, start), localize(D', end))``
with D' = D + 1 when it crosses midnight. Edges inside a DST gap move to the end of the
gap, repeated wall times use their first occurrence (see ``zones.localize``), so a window
may be an hour shorter or longer on a transition night, and one lying wholly inside a gap
vanishes that night.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zlib import crc32
from zoneinfo import ZoneInfo

from .model import DigestPeriod, DigestSlot, QuietHours
from .zones import localize

__all__ = [
    "add_seconds",
    "digest_period",
    "jitter_seconds",
    "next_digest",
    "posix_seconds",
    "quiet_spans",
    "quiet_window_at",
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


_POSIX: dict[datetime, int] = {}
_POSIX_LIMIT = 1 << 15


def posix_seconds(at: datetime) -> int:
    """The POSIX second of an aware instant, memoised (window ends recur across users)."""
    try:
        return _POSIX[at]
    except KeyError:
        pass
    seconds = (at - _EPOCH) // _SECOND  # without a float round trip
    if len(_POSIX) >= _POSIX_LIMIT:
        _POSIX.clear()
    _POSIX[at] = seconds
    return seconds


# 64-bit odd multipliers: the golden ratio (spreads a window's seconds over all 64 bits)
# and the two of the splitmix64 finaliser.
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def jitter_seconds(user_id: str, message_id: str, anchor: datetime, span: int) -> int:
    """A deterministic offset in ``[0, span)`` seconds for one user, message and window.

    A hash spreads a million users deferred to the same window end evenly over the span;
    the same inputs always give the same offset (never ``random``, never ``hash()``, which
    is salted per process). The user and message ids are CRC-32'd separately into the two
    halves of a 64-bit word (so no concatenation of ids can collide), the window's POSIX
    second is multiplied in, and two multiply-xorshift rounds mix it; the high 32 bits
    pick the offset. About a third cheaper than BLAKE2b of a formatted string.
    """
    if span <= 0:
        return 0
    seconds = _POSIX.get(anchor)
    if seconds is None:
        seconds = posix_seconds(anchor)
    word = (crc32(message_id.encode()) << 32 | crc32(user_id.encode())) ^ seconds * _GOLDEN
    word = word * _MIX1 & _MASK64
    word = (word ^ word >> 29) * _MIX2 & _MASK64
    return (word >> 32) % span


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
