"""When a campaign sends to each user, and the checks of a campaign's schedule (pure).

No I/O and no clock: ``now`` and the user's zone are arguments. A schedule is the
contract's ``pushwarden.scheduler.v1.Schedule``; :func:`due_time` expects one that
passed :func:`check_schedule` (it raises ``ValueError`` on an impossible local date).

Due instants by mode (all returned in UTC):

- IMMEDIATE: the campaign's start (``started_at``), the same for every page of its
  fan-out, so a repeated page gives the same instant.
- AT: ``send_at``; ``now`` if that has passed when the user is fanned out.
- LOCAL_TIME: the wall time on the local date in the user's zone. A wall time inside a
  DST gap is the first instant after the gap; one that occurs twice is its first
  occurrence (``pushwarden.policy.zones.localize``, the rule the policy uses for every
  wall-clock edge). If that instant is before ``now`` the passed-time policy decides:
  SKIP (the default) is not due (LOCAL_TIME_PASSED), SEND_NOW is ``now``, NEXT_DAY is the
  same wall time on the first later local day on which it is not past (the next day,
  unless the fan-out ran more than a day late).
- BEST_TIME: the user's most likely local open hour, in the window ``[window_start,
  window_end)`` at or after ``now``. The hour comes from the user's opens by UTC hour,
  turned into local hours with the zone's offset at the start of that search (a zone
  with a non-whole-hour offset rounds down, as the contract says), when the user has at
  least ``min_opens`` opens (default 3); otherwise from the fallback: APP_BEST_HOUR (the
  app's most likely local hour; without one, WINDOW_START), WINDOW_START, or FIXED_TIME
  (``fallback_time``, local, to the minute). An hour is *spread*: each user sends at
  a fixed offset into the hour (0..3,599 s, from SHA-256 of campaign and user id), so a
  million users with the same best hour do not all fall on ``:00:00``, and a repeated
  fan-out gives the same instant. The instant is the hour's (or the fixed time's) first
  occurrence in the window at or after ``now``; if none falls inside, the window's start
  (or ``now`` if later), even once the window has passed: the campaign is late, and the
  send's expiry, not the schedule, decides whether late is too late. WINDOW_START is
  exactly that instant, not spread. The lookback of the open history is the caller's
  concern.

LOCAL_TIME and BEST_TIME need the user's zone: ``zone=None`` (no zone, and no app
fallback zone, which the caller has already applied) is not due with NO_TIMEZONE.
IMMEDIATE and AT ignore the zone.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Protocol
from zoneinfo import ZoneInfo

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.policy.zones import localize
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2

__all__ = [
    "DEFAULT_MIN_OPENS",
    "EARLIEST_OFFSET",
    "FAN_OUT_LEAD",
    "LATEST_OFFSET",
    "MAX_BEST_TIME_WINDOW",
    "MAX_LOOKBACK",
    "MAX_MIN_OPENS",
    "Due",
    "DueBasis",
    "NotDue",
    "OpenHours",
    "best_local_hour",
    "check_schedule",
    "due_time",
    "fan_out_start",
    "local_hour_histogram",
    "spread_offset",
]

DEFAULT_MIN_OPENS: Final = 3
"""Opens a user needs for a personal best time when ``min_opens`` is 0 (unset)."""
MAX_MIN_OPENS: Final = 10_000
"""A larger ``min_opens`` would leave every user on the fallback."""
MAX_BEST_TIME_WINDOW: Final = timedelta(days=7)
MAX_LOOKBACK: Final = timedelta(days=3660)
"""As delivery's GetOpenHours: beyond this a lookback reaches before any data."""
EARLIEST_OFFSET: Final = timedelta(hours=14)
"""The largest UTC offset of any zone (Pacific/Kiritimati): a local time comes there first."""
LATEST_OFFSET: Final = timedelta(hours=-12)
"""The smallest UTC offset of any zone (Etc/GMT+12): a local time comes there last."""
FAN_OUT_LEAD: Final = timedelta(hours=1)
"""How long before the earliest zone's local time a LOCAL_TIME fan-out starts, so that
a large audience is fanned out before the first users are due (a user fanned out after
their local time would count as passed)."""

_0S: Final = timedelta(0)
_HOURS: Final = range(24)
_SECONDS_PER_HOUR: Final = 3600
_SPREAD_TAG: Final = b"pushwarden.best-time\0"

_SKIP = resources_pb2.PASSED_TIME_POLICY_SKIP
_SEND_NOW = resources_pb2.PASSED_TIME_POLICY_SEND_NOW
_NEXT_DAY = resources_pb2.PASSED_TIME_POLICY_NEXT_DAY
_APP_BEST_HOUR = resources_pb2.BEST_TIME_FALLBACK_APP_BEST_HOUR
_WINDOW_START = resources_pb2.BEST_TIME_FALLBACK_WINDOW_START
_FIXED_TIME = resources_pb2.BEST_TIME_FALLBACK_FIXED_TIME
_PASSED_POLICIES = (_SKIP, _SEND_NOW, _NEXT_DAY)
_FALLBACKS = (_APP_BEST_HOUR, _WINDOW_START, _FIXED_TIME)


class OpenHours(Protocol):
    """A user's opens by UTC hour: delivery's ``UserOpenHours`` or anything shaped like it."""

    @property
    def opens_by_utc_hour(self) -> Sequence[int]:
        """24 counts, index = UTC hour of the open."""
        ...


class DueBasis(enum.Enum):
    """Which rule gave a due instant (for traces and tests)."""

    IMMEDIATE = "IMMEDIATE"
    AT = "AT"
    AT_PASSED = "AT_PASSED"
    """``send_at`` had passed at fan-out: now."""
    LOCAL_TIME = "LOCAL_TIME"
    LOCAL_TIME_SEND_NOW = "LOCAL_TIME_SEND_NOW"
    LOCAL_TIME_NEXT_DAY = "LOCAL_TIME_NEXT_DAY"
    BEST_TIME_USER = "BEST_TIME_USER"
    """The user's own most likely open hour."""
    BEST_TIME_APP_HOUR = "BEST_TIME_APP_HOUR"
    BEST_TIME_WINDOW_START = "BEST_TIME_WINDOW_START"
    BEST_TIME_FIXED_TIME = "BEST_TIME_FIXED_TIME"
    BEST_TIME_NO_SLOT = "BEST_TIME_NO_SLOT"
    """The chosen hour or time does not occur in what is left of the window: its start,
    or now if later."""


@dataclass(frozen=True, slots=True)
class Due:
    """The user's intent is due at ``at`` (UTC); ``basis`` says which rule gave it."""

    at: datetime
    basis: DueBasis


@dataclass(frozen=True, slots=True)
class NotDue:
    """The user is not sent to: ``reason`` is the contract's drop reason
    (REASON_CODE_LOCAL_TIME_PASSED or REASON_CODE_NO_TIMEZONE)."""

    reason: decision_pb2.ReasonCode.ValueType


def _require_aware(*instants: datetime) -> None:
    # A naive datetime would be read in the machine's zone by astimezone: refuse it.
    if any(at.utcoffset() is None for at in instants):
        raise ValueError("instants must be timezone-aware")


def _utc(ts: Timestamp) -> datetime:
    return ts.ToDatetime(UTC)


def _local_date(value: types_pb2.LocalDate) -> date:
    return date(value.year, value.month, value.day)


def _local_time(value: types_pb2.LocalTime) -> time:
    return time(value.hours, value.minutes)


def due_time(
    schedule: resources_pb2.Schedule,
    *,
    zone: ZoneInfo | None,
    now: datetime,
    started_at: datetime,
    open_hours: OpenHours | None,
    app_best_local_hour: int | None,
    user_id: str,
    campaign_id: str,
) -> Due | NotDue:
    """When one user's intent of a campaign is due (see the module's description).

    ``zone``: the user's zone with the app's fallback already applied (None: neither);
    ``now``: the fan-out's current instant; ``started_at``: when the campaign started;
    ``open_hours``: the user's opens by UTC hour (BEST_TIME; None: no history);
    ``app_best_local_hour``: the app's most likely local open hour, 0..23 (None: unknown).
    Datetimes must be aware.
    """
    _require_aware(now, started_at)
    mode = schedule.WhichOneof("mode")
    if mode == "at":
        send_at = _utc(schedule.at.send_at)
        if send_at < now:
            return Due(now.astimezone(UTC), DueBasis.AT_PASSED)
        return Due(send_at, DueBasis.AT)
    if mode == "local_time":
        return _local_time_due(schedule.local_time, zone, now)
    if mode == "best_time":
        return _best_time_due(
            schedule.best_time,
            zone=zone,
            now=now,
            open_hours=open_hours,
            app_best_local_hour=app_best_local_hour,
            user_id=user_id,
            campaign_id=campaign_id,
        )
    # IMMEDIATE (and, defensively, a schedule without a mode, which the checks refuse).
    return Due(started_at.astimezone(UTC), DueBasis.IMMEDIATE)


def _local_time_due(
    local: resources_pb2.LocalTimeSchedule, zone: ZoneInfo | None, now: datetime
) -> Due | NotDue:
    if zone is None:
        return NotDue(decision_pb2.REASON_CODE_NO_TIMEZONE)
    day, wall = _local_date(local.date), _local_time(local.time)
    at = localize(zone, day, wall)
    if at >= now:
        return Due(at, DueBasis.LOCAL_TIME)
    if local.if_passed == _SEND_NOW:
        return Due(now.astimezone(UTC), DueBasis.LOCAL_TIME_SEND_NOW)
    if local.if_passed == _NEXT_DAY:
        # Normally one step; more only if the fan-out ran over a day late.
        skipped = max(1, (now - at).days)
        while True:
            at = localize(zone, day + timedelta(days=skipped), wall)
            if at >= now:
                return Due(at, DueBasis.LOCAL_TIME_NEXT_DAY)
            skipped += 1
    # SKIP, unset, or a value this build does not know: the contract's default.
    return NotDue(decision_pb2.REASON_CODE_LOCAL_TIME_PASSED)


def spread_offset(campaign_id: str, user_id: str) -> timedelta:
    """How far into a best-time hour the user is sent: 0..3,599 whole seconds, a
    deterministic function of campaign and user (so the same user moves between
    campaigns, and a repeated fan-out page gives the same instant)."""
    digest = hashlib.sha256(_SPREAD_TAG + f"{campaign_id}\0{user_id}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % _SECONDS_PER_HOUR)


def local_hour_histogram(opens_by_utc_hour: Sequence[int], offset: timedelta) -> list[int]:
    """Opens by UTC hour as opens by local hour under a fixed UTC ``offset``.

    An open in UTC hour ``h`` happened between ``h:00 + offset`` and ``h:59 + offset``
    local; its local hour is that of ``h:00 + offset``, i.e. a non-whole-hour offset
    rounds down (+05:30: UTC 03 → local 08; -03:30: UTC 03 → local 23).
    """
    shift = int(offset.total_seconds()) // _SECONDS_PER_HOUR
    local = [0] * 24
    for utc_hour, count in enumerate(opens_by_utc_hour[:24]):
        local[(utc_hour + shift) % 24] += count
    return local


def best_local_hour(
    opens_by_utc_hour: Sequence[int], offset: timedelta, min_opens: int
) -> int | None:
    """The user's most likely local open hour (ties: the earliest hour), or None with
    fewer than ``min_opens`` opens or a histogram that is not 24 counts."""
    if len(opens_by_utc_hour) != 24 or sum(opens_by_utc_hour) < max(min_opens, 1):
        return None
    local = local_hour_histogram(opens_by_utc_hour, offset)
    return max(range(24), key=lambda hour: (local[hour], -hour))


def _first_slot(
    zone: ZoneInfo, wall: time, shift: timedelta, lo: datetime, hi: datetime
) -> datetime | None:
    """The first instant ``localize(day, wall) + shift`` in ``[lo, hi)`` over the local
    days around the range, or None."""
    day = lo.astimezone(zone).date() - timedelta(days=1)
    while True:
        slot = localize(zone, day, wall) + shift
        if slot >= hi:
            return None
        if slot >= lo:
            return slot
        day += timedelta(days=1)


def _best_time_due(
    best: resources_pb2.BestTimeSchedule,
    *,
    zone: ZoneInfo | None,
    now: datetime,
    open_hours: OpenHours | None,
    app_best_local_hour: int | None,
    user_id: str,
    campaign_id: str,
) -> Due | NotDue:
    if zone is None:
        return NotDue(decision_pb2.REASON_CODE_NO_TIMEZONE)
    start, end = _utc(best.window_start), _utc(best.window_end)
    lo = max(start, now.astimezone(UTC))
    offset = lo.astimezone(zone).utcoffset() or timedelta(0)
    min_opens = best.min_opens or DEFAULT_MIN_OPENS
    hour = (
        best_local_hour(open_hours.opens_by_utc_hour, offset, min_opens)
        if open_hours is not None
        else None
    )
    shift = spread_offset(campaign_id, user_id)
    if hour is not None:
        basis, wall = DueBasis.BEST_TIME_USER, time(hour)
    else:
        fallback = best.fallback if best.fallback in _FALLBACKS else _APP_BEST_HOUR
        if fallback == _FIXED_TIME:
            # The marketer's own minute: not spread.
            basis, wall, shift = DueBasis.BEST_TIME_FIXED_TIME, _local_time(best.fallback_time), _0S
        elif (
            fallback == _APP_BEST_HOUR
            and app_best_local_hour is not None
            and app_best_local_hour in _HOURS
        ):
            basis, wall = DueBasis.BEST_TIME_APP_HOUR, time(app_best_local_hour)
        else:
            return Due(lo, DueBasis.BEST_TIME_WINDOW_START)
    slot = _first_slot(zone, wall, shift, lo, end)
    if slot is None:
        return Due(lo, DueBasis.BEST_TIME_NO_SLOT)
    return Due(slot, basis)


def fan_out_start(
    schedule: resources_pb2.Schedule, now: datetime, *, lead: timedelta = FAN_OUT_LEAD
) -> datetime:
    """When a started campaign's fan-out is due (UTC, never before ``now``).

    Every mode fans out ``lead`` ahead of its first due instant, so intents are stored
    when they fall due (the audience is checked again at due time). LOCAL_TIME: before
    the local time comes to the earliest zone (UTC+14). AT: before ``send_at``.
    BEST_TIME: before the window's start. IMMEDIATE: now.
    """
    _require_aware(now)
    now = now.astimezone(UTC)
    mode = schedule.WhichOneof("mode")
    if mode == "at":
        return max(now, _utc(schedule.at.send_at) - lead)
    if mode == "local_time":
        local = schedule.local_time
        wall = datetime.combine(_local_date(local.date), _local_time(local.time), UTC)
        return max(now, wall - EARLIEST_OFFSET - lead)
    if mode == "best_time":
        return max(now, _utc(schedule.best_time.window_start) - lead)
    return now


def _timestamp(problems: Violations, field: str, present: bool, ts: Timestamp) -> datetime | None:
    """A required, representable timestamp (years 1..9999, nanos in range)."""
    if not problems.required(field, present):
        return None
    try:
        if not 0 <= ts.nanos <= 999_999_999:
            raise ValueError
        return _utc(ts)
    except (ValueError, OverflowError):
        problems.add(field, "not a valid timestamp (years 1 to 9999)")
        return None


def _check_date(
    problems: Violations, field: str, present: bool, value: types_pb2.LocalDate
) -> date | None:
    if not problems.required(field, present):
        return None
    try:
        return _local_date(value)
    except ValueError:
        problems.add(
            field, f"not a calendar date: {value.year:04d}-{value.month:02d}-{value.day:02d}"
        )
        return None


def _check_time(
    problems: Violations, field: str, present: bool, value: types_pb2.LocalTime
) -> time | None:
    if not problems.required(field, present):
        return None
    valid = True
    if not 0 <= value.hours <= 23:
        problems.add(f"{field}.hours", "0 to 23")
        valid = False
    if not 0 <= value.minutes <= 59:
        problems.add(f"{field}.minutes", "0 to 59")
        valid = False
    return _local_time(value) if valid else None


def _check_duration(problems: Violations, field: str, value: Duration) -> None:
    if not -999_999_999 <= value.nanos <= 999_999_999:
        problems.add(field, "not a valid duration")
        return
    length = timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
    if length <= _0S:
        problems.add(field, "must be positive")
    elif length > MAX_LOOKBACK:
        problems.add(field, f"at most {MAX_LOOKBACK.days:,} days")


def check_schedule(
    problems: Violations, field: str, schedule: resources_pb2.Schedule, now: datetime
) -> None:
    """Everything about a schedule that needs no other service, each problem under its
    field path below ``field`` (e.g. ``campaign.schedule.at.send_at``).

    Exactly one mode. AT: ``send_at`` set and not in the past. LOCAL_TIME: a real
    calendar date and a time of day (hours 0..23, minutes 0..59), a known passed-time
    policy, and not entirely past (the wall time has not yet come in UTC-12, the last
    zone to reach it). BEST_TIME: both window ends set, the end after the start and at
    most 7 days later and not past, a positive lookback of at most 3,660 days,
    ``min_opens`` at most 10,000, a known fallback, and ``fallback_time`` (a valid time)
    for FIXED_TIME.
    """
    mode = schedule.WhichOneof("mode")
    if mode is None:
        problems.add(field, "required: exactly one of immediate, at, local_time, best_time")
    elif mode == "at":
        at = f"{field}.at"
        send_at = _timestamp(
            problems, f"{at}.send_at", schedule.at.HasField("send_at"), schedule.at.send_at
        )
        if send_at is not None and send_at < now:
            problems.add(f"{at}.send_at", "must not be in the past")
    elif mode == "local_time":
        _check_local_time(problems, f"{field}.local_time", schedule.local_time, now)
    elif mode == "best_time":
        _check_best_time(problems, f"{field}.best_time", schedule.best_time, now)


def _check_local_time(
    problems: Violations, field: str, local: resources_pb2.LocalTimeSchedule, now: datetime
) -> None:
    day = _check_date(problems, f"{field}.date", local.HasField("date"), local.date)
    wall = _check_time(problems, f"{field}.time", local.HasField("time"), local.time)
    problems.enum(f"{field}.if_passed", local.if_passed, _PASSED_POLICIES, required=False)
    if day is None or wall is None:
        return
    try:
        last = datetime.combine(day, wall, UTC) - LATEST_OFFSET
    except OverflowError:  # 9999-12-31 late in the day: still to come everywhere
        return
    if last < now:
        problems.add(
            f"{field}.date",
            f"{day.isoformat()} {wall.isoformat('minutes')} has passed in every time zone",
        )


def _check_best_time(
    problems: Violations, field: str, best: resources_pb2.BestTimeSchedule, now: datetime
) -> None:
    start = _timestamp(
        problems, f"{field}.window_start", best.HasField("window_start"), best.window_start
    )
    end = _timestamp(problems, f"{field}.window_end", best.HasField("window_end"), best.window_end)
    if start is not None and end is not None:
        if end <= start:
            problems.add(f"{field}.window_end", "must be after window_start")
        elif end - start > MAX_BEST_TIME_WINDOW:
            problems.add(f"{field}.window_end", "at most 7 days after window_start")
        elif end <= now:
            problems.add(f"{field}.window_end", "the window has passed")
    if best.HasField("lookback"):
        _check_duration(problems, f"{field}.lookback", best.lookback)
    if best.min_opens > MAX_MIN_OPENS:
        problems.add(f"{field}.min_opens", f"at most {MAX_MIN_OPENS:,} (0: the default, 3)")
    problems.enum(f"{field}.fallback", best.fallback, _FALLBACKS, required=False)
    if best.fallback == _FIXED_TIME:
        _check_time(
            problems, f"{field}.fallback_time", best.HasField("fallback_time"), best.fallback_time
        )
