"""Campaign schedules, pure: each user's due instant (IMMEDIATE, AT, LOCAL_TIME in the
user's zone across DST nights and the date line with every passed-time policy, BEST_TIME
from open histograms with its fallbacks and window edges), when fan-out starts, and the
schedule checks with their field paths. Property tests draw zones from the whole IANA
set, and wall times near their transitions."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.policy.zones import localize
from pushwarden.runtime.validation import Violations
from pushwarden.scheduler.v1 import resources_pb2 as pb
from pushwarden.services.scheduler.domain.schedule import (
    EARLIEST_OFFSET,
    FAN_OUT_LEAD,
    LATEST_OFFSET,
    Due,
    DueBasis,
    NotDue,
    best_local_hour,
    check_schedule,
    due_time,
    fan_out_start,
    local_hour_histogram,
    spread_offset,
)

PARIS = ZoneInfo("Europe/Paris")
TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
KIRITIMATI = ZoneInfo("Pacific/Kiritimati")
PAGO_PAGO = ZoneInfo("Pacific/Pago_Pago")
CAMPAIGN = "cmp_schedule"
USER = "user-1"
EARLY = datetime(2000, 1, 1, tzinfo=UTC)
ZONES = sorted(zoneinfo.available_timezones())


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def stamp(at: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def local_time_schedule(day: date, wall: time, if_passed: int = 0) -> pb.Schedule:
    return pb.Schedule(
        local_time=pb.LocalTimeSchedule(
            date=types_pb2.LocalDate(year=day.year, month=day.month, day=day.day),
            time=types_pb2.LocalTime(hours=wall.hour, minutes=wall.minute),
            if_passed=if_passed,  # type: ignore[arg-type]
        )
    )


def best_time_schedule(
    start: datetime,
    end: datetime,
    *,
    fallback: int = 0,
    fallback_time: time | None = None,
    min_opens: int = 0,
) -> pb.Schedule:
    best = pb.BestTimeSchedule(
        window_start=stamp(start),
        window_end=stamp(end),
        min_opens=min_opens,
        fallback=fallback,  # type: ignore[arg-type]
    )
    if fallback_time is not None:
        best.fallback_time.CopyFrom(
            types_pb2.LocalTime(hours=fallback_time.hour, minutes=fallback_time.minute)
        )
    return pb.Schedule(best_time=best)


def hours(counts: dict[int, int]) -> delivery_messages.UserOpenHours:
    """A user's opens by UTC hour."""
    return delivery_messages.UserOpenHours(
        user_id=USER, opens_by_utc_hour=[counts.get(h, 0) for h in range(24)]
    )


def due(
    schedule: pb.Schedule,
    *,
    zone: ZoneInfo | None = PARIS,
    now: datetime = EARLY,
    started_at: datetime | None = None,
    open_hours: delivery_messages.UserOpenHours | None = None,
    app_best_local_hour: int | None = None,
    user_id: str = USER,
) -> Due | NotDue:
    return due_time(
        schedule,
        zone=zone,
        now=now,
        started_at=started_at or now,
        open_hours=open_hours,
        app_best_local_hour=app_best_local_hour,
        user_id=user_id,
        campaign_id=CAMPAIGN,
    )


def due_at(
    schedule: pb.Schedule,
    *,
    zone: ZoneInfo | None = PARIS,
    now: datetime = EARLY,
    started_at: datetime | None = None,
    open_hours: delivery_messages.UserOpenHours | None = None,
    app_best_local_hour: int | None = None,
    user_id: str = USER,
) -> Due:
    result = due(
        schedule,
        zone=zone,
        now=now,
        started_at=started_at,
        open_hours=open_hours,
        app_best_local_hour=app_best_local_hour,
        user_id=user_id,
    )
    assert isinstance(result, Due), result
    return result


# IMMEDIATE and AT


def test_immediate_is_due_when_the_campaign_started_on_every_page() -> None:
    started = utc(2026, 6, 1, 8, 0)
    for now in (started, started + timedelta(minutes=7)):
        result = due_at(pb.Schedule(immediate=pb.ImmediateSchedule()), now=now, started_at=started)
        assert result == Due(started, DueBasis.IMMEDIATE)
    # No zone needed.
    assert (
        due_at(pb.Schedule(immediate=pb.ImmediateSchedule()), zone=None, now=started).at == started
    )


def test_naive_instants_are_refused() -> None:
    naive = datetime(2026, 6, 1, 8, 0)
    schedule = pb.Schedule(immediate=pb.ImmediateSchedule())
    with pytest.raises(ValueError, match="timezone-aware"):
        due(schedule, now=utc(2026, 6, 1, 8, 0), started_at=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        fan_out_start(schedule, naive)


def test_at_is_due_at_its_instant_or_now_once_passed() -> None:
    send_at = utc(2026, 6, 1, 12, 0)
    schedule = pb.Schedule(at=pb.AtSchedule(send_at=stamp(send_at)))
    assert due_at(schedule, now=send_at - timedelta(hours=1)) == Due(send_at, DueBasis.AT)
    assert due_at(schedule, now=send_at, zone=None) == Due(send_at, DueBasis.AT)
    late = send_at + timedelta(minutes=3)
    assert due_at(schedule, now=late) == Due(late, DueBasis.AT_PASSED)


# LOCAL_TIME


def test_local_time_is_the_wall_time_in_the_users_zone() -> None:
    schedule = local_time_schedule(date(2026, 6, 1), time(9, 0))
    assert due_at(schedule, zone=TOKYO).at == utc(2026, 6, 1, 0, 0)
    assert due_at(schedule, zone=PARIS).at == utc(2026, 6, 1, 7, 0)
    assert due_at(schedule, zone=NEW_YORK).at == utc(2026, 6, 1, 13, 0)
    assert due_at(schedule, zone=KOLKATA).at == utc(2026, 6, 1, 3, 30)


def test_a_wall_time_in_the_spring_forward_gap_is_the_first_instant_after_it() -> None:
    # Paris 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
    result = due_at(local_time_schedule(date(2026, 3, 29), time(2, 30)))
    assert result.at == utc(2026, 3, 29, 1, 0)
    assert result.at.astimezone(PARIS).replace(tzinfo=None) == datetime(2026, 3, 29, 3, 0)
    # The minute before the gap and the first one after it are themselves.
    assert due_at(local_time_schedule(date(2026, 3, 29), time(1, 59))).at == utc(2026, 3, 29, 0, 59)
    assert due_at(local_time_schedule(date(2026, 3, 29), time(3, 0))).at == utc(2026, 3, 29, 1, 0)


def test_an_ambiguous_wall_time_is_its_first_occurrence() -> None:
    # Paris 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    result = due_at(local_time_schedule(date(2026, 10, 25), time(2, 30)))
    assert result.at == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, not 01:30 UTC (CET)
    shown = result.at.astimezone(PARIS)
    assert (shown.hour, shown.minute, shown.fold) == (2, 30, 0)


def test_zones_across_the_date_line_get_the_same_date_25_hours_apart() -> None:
    schedule = local_time_schedule(date(2026, 6, 1), time(9, 0))
    first = due_at(schedule, zone=KIRITIMATI).at  # UTC+14
    last = due_at(schedule, zone=PAGO_PAGO).at  # UTC-11
    assert first == utc(2026, 5, 31, 19, 0)
    assert last == utc(2026, 6, 1, 20, 0)
    assert last - first == timedelta(hours=25)
    for zone, at in ((KIRITIMATI, first), (PAGO_PAGO, last)):
        assert at.astimezone(zone).replace(tzinfo=None) == datetime(2026, 6, 1, 9, 0)


def test_users_without_a_zone_are_not_due() -> None:
    result = due(local_time_schedule(date(2026, 6, 1), time(9, 0)), zone=None)
    assert result == NotDue(decision_pb2.REASON_CODE_NO_TIMEZONE)
    best = best_time_schedule(utc(2026, 6, 1), utc(2026, 6, 2))
    assert due(best, zone=None, open_hours=hours({8: 10})) == NotDue(
        decision_pb2.REASON_CODE_NO_TIMEZONE
    )


# 09:00 in Tokyo is 00:00 UTC; the campaign reaches Tokyo users at 10:00 Tokyo time.
TOKYO_NINE = date(2026, 6, 1), time(9, 0)
TOKYO_TEN = utc(2026, 6, 1, 1, 0)


@pytest.mark.parametrize("policy", [pb.PASSED_TIME_POLICY_UNSPECIFIED, pb.PASSED_TIME_POLICY_SKIP])
def test_a_passed_local_time_is_skipped_by_default(policy: int) -> None:
    result = due(local_time_schedule(*TOKYO_NINE, policy), zone=TOKYO, now=TOKYO_TEN)
    assert result == NotDue(decision_pb2.REASON_CODE_LOCAL_TIME_PASSED)
    # Not yet passed in Paris at the same instant.
    assert due_at(local_time_schedule(*TOKYO_NINE, policy), now=TOKYO_TEN).at == utc(
        2026, 6, 1, 7, 0
    )


def test_a_local_time_reached_exactly_now_has_not_passed() -> None:
    result = due(local_time_schedule(*TOKYO_NINE), zone=TOKYO, now=utc(2026, 6, 1, 0, 0))
    assert result == Due(utc(2026, 6, 1, 0, 0), DueBasis.LOCAL_TIME)


def test_a_passed_local_time_sends_now_with_send_now() -> None:
    schedule = local_time_schedule(*TOKYO_NINE, pb.PASSED_TIME_POLICY_SEND_NOW)
    assert due_at(schedule, zone=TOKYO, now=TOKYO_TEN) == Due(
        TOKYO_TEN, DueBasis.LOCAL_TIME_SEND_NOW
    )


def test_a_passed_local_time_moves_to_the_next_day_with_next_day() -> None:
    schedule = local_time_schedule(*TOKYO_NINE, pb.PASSED_TIME_POLICY_NEXT_DAY)
    assert due_at(schedule, zone=TOKYO, now=TOKYO_TEN) == Due(
        utc(2026, 6, 2, 0, 0), DueBasis.LOCAL_TIME_NEXT_DAY
    )
    # A fan-out three and a half days late still lands on the first day ahead.
    late = utc(2026, 6, 4, 12, 0)
    assert due_at(schedule, zone=TOKYO, now=late).at == utc(2026, 6, 5, 0, 0)


def test_next_day_across_a_dst_night_keeps_the_wall_time() -> None:
    # 02:30 on Saturday 2026-03-28 passed; on Sunday 02:30 does not exist in Paris.
    schedule = local_time_schedule(date(2026, 3, 28), time(2, 30), pb.PASSED_TIME_POLICY_NEXT_DAY)
    result = due_at(schedule, now=utc(2026, 3, 28, 3, 0))
    assert result == Due(utc(2026, 3, 29, 1, 0), DueBasis.LOCAL_TIME_NEXT_DAY)
    schedule = local_time_schedule(date(2026, 3, 28), time(9, 0), pb.PASSED_TIME_POLICY_NEXT_DAY)
    result = due_at(schedule, now=utc(2026, 3, 28, 9, 0))
    assert result.at == utc(2026, 3, 29, 7, 0)  # 09:00 CEST, 23 hours after 09:00 CET


# BEST_TIME

WINDOW = utc(2026, 6, 1, 0, 0), utc(2026, 6, 3, 0, 0)


def test_best_time_uses_the_users_local_open_hour_in_their_zone() -> None:
    # New York (EDT, UTC-4): opens mostly at 23:00 UTC, i.e. 19:00 local.
    opens = hours({23: 7, 12: 2, 13: 1})
    result = due_at(best_time_schedule(*WINDOW), zone=NEW_YORK, open_hours=opens)
    spread = spread_offset(CAMPAIGN, USER)
    # The window opens at 20:00 EDT on 31 May: the first 19:xx inside is on 1 June.
    assert result == Due(utc(2026, 6, 1, 23, 0) + spread, DueBasis.BEST_TIME_USER)
    shown = result.at.astimezone(NEW_YORK)
    assert (shown.date(), shown.hour) == (date(2026, 6, 1), 19)
    # The same histogram in Tokyo (UTC+9): 23:00 UTC is 08:00 local.
    tokyo = due_at(best_time_schedule(*WINDOW), zone=TOKYO, open_hours=opens)
    assert tokyo.at == utc(2026, 6, 1, 23, 0) + spread
    assert tokyo.at.astimezone(TOKYO).hour == 8


def test_best_time_rounds_half_hour_zones_down() -> None:
    assert best_local_hour([0] * 3 + [5] + [0] * 20, timedelta(hours=5, minutes=30), 3) == 8
    assert best_local_hour([0] * 3 + [5] + [0] * 20, timedelta(hours=-3, minutes=-30), 3) == 23
    assert local_hour_histogram(list(range(24)), timedelta(hours=-4)) == [
        (h + 4) % 24 for h in range(24)
    ]
    opens = hours({3: 5})  # 03:00-03:59 UTC is 08:30-09:29 in Kolkata
    result = due_at(best_time_schedule(*WINDOW), zone=KOLKATA, open_hours=opens)
    assert result.basis is DueBasis.BEST_TIME_USER
    assert result.at == localize(KOLKATA, date(2026, 6, 1), time(8)) + spread_offset(CAMPAIGN, USER)


def test_ties_go_to_the_earliest_local_hour() -> None:
    assert best_local_hour([0] * 10 + [4, 4] + [0] * 12, timedelta(0), 3) == 10
    assert best_local_hour([4] + [0] * 22 + [4], timedelta(hours=2), 3) == 1


def test_too_few_opens_fall_back() -> None:
    opens = hours({23: 2})
    schedule = best_time_schedule(*WINDOW)
    result = due_at(schedule, zone=NEW_YORK, open_hours=opens, app_best_local_hour=10)
    assert result.basis is DueBasis.BEST_TIME_APP_HOUR
    # min_opens 2 makes the same history enough.
    schedule = best_time_schedule(*WINDOW, min_opens=2)
    result = due_at(schedule, zone=NEW_YORK, open_hours=opens, app_best_local_hour=10)
    assert result.basis is DueBasis.BEST_TIME_USER
    assert result.at.astimezone(NEW_YORK).hour == 19
    # A malformed histogram (not 24 counts) counts as none.
    bad = delivery_messages.UserOpenHours(user_id=USER, opens_by_utc_hour=[9] * 12)
    result = due_at(best_time_schedule(*WINDOW), zone=NEW_YORK, open_hours=bad)
    assert result.basis is DueBasis.BEST_TIME_WINDOW_START


@pytest.mark.parametrize(
    "fallback", [pb.BEST_TIME_FALLBACK_UNSPECIFIED, pb.BEST_TIME_FALLBACK_APP_BEST_HOUR]
)
def test_the_app_best_hour_fallback(fallback: int) -> None:
    schedule = best_time_schedule(*WINDOW, fallback=fallback)
    result = due_at(schedule, zone=PARIS, open_hours=None, app_best_local_hour=10)
    # The window opens at 02:00 CEST on 1 June: 10:xx the same morning.
    assert result == Due(
        localize(PARIS, date(2026, 6, 1), time(10)) + spread_offset(CAMPAIGN, USER),
        DueBasis.BEST_TIME_APP_HOUR,
    )
    # Without an app-wide hour: the window's start.
    result = due_at(schedule, zone=PARIS, open_hours=None, app_best_local_hour=None)
    assert result == Due(WINDOW[0], DueBasis.BEST_TIME_WINDOW_START)


def test_the_window_start_fallback_is_the_start_or_now() -> None:
    schedule = best_time_schedule(*WINDOW, fallback=pb.BEST_TIME_FALLBACK_WINDOW_START)
    result = due_at(schedule, zone=PARIS, app_best_local_hour=10, open_hours=hours({}))
    assert result == Due(WINDOW[0], DueBasis.BEST_TIME_WINDOW_START)
    later = WINDOW[0] + timedelta(hours=5)
    assert due_at(schedule, zone=PARIS, now=later).at == later


def test_the_fixed_time_fallback_is_local_and_not_spread() -> None:
    schedule = best_time_schedule(
        *WINDOW, fallback=pb.BEST_TIME_FALLBACK_FIXED_TIME, fallback_time=time(7, 15)
    )
    for user in ("u1", "u2", "u3"):
        result = due_at(schedule, zone=TOKYO, user_id=user)
        # The window opens at 09:00 JST on 1 June: 07:15 JST comes next on 2 June.
        assert result == Due(utc(2026, 6, 1, 22, 15), DueBasis.BEST_TIME_FIXED_TIME)


def test_window_edges_start_included_end_excluded() -> None:
    start = localize(TOKYO, date(2026, 6, 1), time(7, 15))

    def fixed(begin: datetime, end: datetime) -> pb.Schedule:
        return best_time_schedule(
            begin, end, fallback=pb.BEST_TIME_FALLBACK_FIXED_TIME, fallback_time=time(7, 15)
        )

    # The fixed time at the start itself.
    result = due_at(fixed(start, start + timedelta(hours=2)), zone=TOKYO)
    assert result == Due(start, DueBasis.BEST_TIME_FIXED_TIME)
    # A window that ends exactly at the fixed time does not hold it: the start.
    begin = start - timedelta(hours=3)
    result = due_at(fixed(begin, start), zone=TOKYO)
    assert result == Due(begin, DueBasis.BEST_TIME_NO_SLOT)
    # ... one minute more and it does.
    window = fixed(begin, start + timedelta(minutes=1))
    assert due_at(window, zone=TOKYO).at == start


def test_a_best_hour_already_past_today_moves_to_tomorrow_inside_the_window() -> None:
    opens = hours({23: 9})  # 08:00 Tokyo
    now = utc(2026, 6, 1, 0, 0)  # 09:00 Tokyo, the window is open
    result = due_at(best_time_schedule(*WINDOW), zone=TOKYO, now=now, open_hours=opens)
    assert result.at == utc(2026, 6, 1, 23, 0) + spread_offset(CAMPAIGN, USER)
    # Later than the last 08:xx in the window: now.
    late, end = utc(2026, 6, 2, 1, 0), utc(2026, 6, 2, 12, 0)  # 10:00 to 21:00 Tokyo
    result = due_at(best_time_schedule(WINDOW[0], end), zone=TOKYO, now=late, open_hours=opens)
    assert result == Due(late, DueBasis.BEST_TIME_NO_SLOT)


def test_no_occurrence_in_a_short_window_is_the_start() -> None:
    start = utc(2026, 6, 1, 0, 0)  # 09:00 Tokyo
    schedule = best_time_schedule(start, start + timedelta(hours=2))
    result = due_at(schedule, zone=TOKYO, open_hours=hours({23: 9}))
    assert result == Due(start, DueBasis.BEST_TIME_NO_SLOT)


def test_a_passed_window_is_now() -> None:
    late = WINDOW[1] + timedelta(hours=1)
    result = due_at(best_time_schedule(*WINDOW), zone=TOKYO, now=late, open_hours=hours({23: 9}))
    assert result == Due(late, DueBasis.BEST_TIME_NO_SLOT)


def test_users_with_the_same_best_hour_spread_over_it() -> None:
    opens = hours({23: 9})
    offsets = []
    for n in range(2000):
        result = due_at(
            best_time_schedule(*WINDOW), zone=TOKYO, open_hours=opens, user_id=f"user-{n}"
        )
        assert result.at.astimezone(TOKYO).hour == 8
        offsets.append(result.at - utc(2026, 6, 1, 23, 0))
        assert result == due_at(  # the same user, the same instant
            best_time_schedule(*WINDOW), zone=TOKYO, open_hours=opens, user_id=f"user-{n}"
        )
    assert all(timedelta(0) <= offset < timedelta(hours=1) for offset in offsets)
    quarters = {offset // timedelta(minutes=15) for offset in offsets}
    assert quarters == {0, 1, 2, 3}
    assert len(set(offsets)) > 1500  # not a handful of instants
    assert spread_offset("other", "user-1") != spread_offset(CAMPAIGN, "user-1")


def test_a_best_hour_in_the_dst_gap_is_after_the_gap() -> None:
    # Paris opens at 00:xx UTC in winter (01:xx CET); hour 2 local on 29 March is skipped.
    opens = hours({1: 9})  # with the offset at the window's start (CET): 02:00 local
    start = utc(2026, 3, 28, 23, 0)
    schedule = best_time_schedule(start, start + timedelta(hours=6))
    result = due_at(schedule, zone=PARIS, open_hours=opens)
    assert result.at == utc(2026, 3, 29, 1, 0) + spread_offset(CAMPAIGN, USER)
    assert result.at.astimezone(PARIS).hour == 3


# Fan-out start


def test_fan_out_starts_before_the_earliest_zone_reaches_the_local_time() -> None:
    schedule = local_time_schedule(date(2026, 6, 1), time(9, 0))
    now = utc(2026, 5, 20)
    start = fan_out_start(schedule, now)
    assert start == utc(2026, 5, 31, 19, 0) - FAN_OUT_LEAD
    assert start + FAN_OUT_LEAD == due_at(schedule, zone=KIRITIMATI, now=now).at
    assert fan_out_start(schedule, now, lead=timedelta(0)) == utc(2026, 5, 31, 19, 0)
    # Already late: now.
    assert fan_out_start(schedule, utc(2026, 6, 1, 3, 0)) == utc(2026, 6, 1, 3, 0)


def test_fan_out_of_the_other_modes() -> None:
    now = utc(2026, 6, 1, 8, 0)
    assert fan_out_start(pb.Schedule(immediate=pb.ImmediateSchedule()), now) == now
    send_at = utc(2026, 6, 2, 10, 0)
    lead = FAN_OUT_LEAD
    assert (
        fan_out_start(pb.Schedule(at=pb.AtSchedule(send_at=stamp(send_at))), now) == send_at - lead
    )
    assert fan_out_start(
        pb.Schedule(at=pb.AtSchedule(send_at=stamp(send_at))), send_at + timedelta(1)
    ) == send_at + timedelta(1)
    assert fan_out_start(best_time_schedule(*WINDOW), utc(2026, 5, 1)) == WINDOW[0] - lead
    assert fan_out_start(best_time_schedule(*WINDOW), now) == now


# Checks

NOW = utc(2026, 6, 1, 12, 0)


def problems_of(schedule: pb.Schedule, now: datetime = NOW) -> list[tuple[str, str]]:
    problems = Violations()
    check_schedule(problems, "campaign.schedule", schedule, now)
    return problems.items


def fields_of(schedule: pb.Schedule, now: datetime = NOW) -> list[str]:
    return [field for field, _ in problems_of(schedule, now)]


def test_valid_schedules_pass() -> None:
    assert problems_of(pb.Schedule(immediate=pb.ImmediateSchedule())) == []
    assert problems_of(pb.Schedule(at=pb.AtSchedule(send_at=stamp(NOW)))) == []
    assert problems_of(local_time_schedule(date(2026, 6, 1), time(9, 0))) == []
    assert problems_of(local_time_schedule(date(2027, 2, 28), time(23, 59), 3)) == []
    best = best_time_schedule(NOW, NOW + timedelta(days=7), fallback=3, fallback_time=time(8, 0))
    best.best_time.lookback.CopyFrom(Duration(seconds=30 * 86400))
    assert problems_of(best) == []
    assert (
        problems_of(best_time_schedule(NOW - timedelta(days=1), NOW + timedelta(seconds=1))) == []
    )


def test_a_schedule_needs_a_mode() -> None:
    assert fields_of(pb.Schedule()) == ["campaign.schedule"]


def test_at_must_be_set_and_not_past() -> None:
    assert fields_of(pb.Schedule(at=pb.AtSchedule())) == ["campaign.schedule.at.send_at"]
    past = pb.Schedule(at=pb.AtSchedule(send_at=stamp(NOW - timedelta(seconds=1))))
    assert problems_of(past) == [("campaign.schedule.at.send_at", "must not be in the past")]
    broken = pb.Schedule(at=pb.AtSchedule(send_at=Timestamp(seconds=10**12)))
    assert fields_of(broken) == ["campaign.schedule.at.send_at"]


def test_local_time_needs_a_real_date_and_time() -> None:
    field = "campaign.schedule.local_time"
    assert fields_of(pb.Schedule(local_time=pb.LocalTimeSchedule())) == [
        f"{field}.date",
        f"{field}.time",
    ]
    for bad in ((2026, 2, 29), (2026, 13, 1), (2026, 4, 31), (0, 1, 1), (2026, 6, 0)):
        schedule = local_time_schedule(date(2026, 6, 1), time(9, 0))
        year, month, day = bad
        schedule.local_time.date.CopyFrom(types_pb2.LocalDate(year=year, month=month, day=day))
        assert fields_of(schedule) == [f"{field}.date"], bad
    schedule = local_time_schedule(date(2028, 2, 29), time(9, 0))  # a leap day
    assert fields_of(schedule) == []
    schedule.local_time.time.CopyFrom(types_pb2.LocalTime(hours=24, minutes=60))
    assert fields_of(schedule) == [f"{field}.time.hours", f"{field}.time.minutes"]
    schedule.local_time.time.CopyFrom(types_pb2.LocalTime(hours=-1, minutes=0))
    assert fields_of(schedule) == [f"{field}.time.hours"]


def test_local_time_passed_policy_must_be_known() -> None:
    schedule = local_time_schedule(date(2026, 6, 1), time(9, 0), 9)
    assert fields_of(schedule) == ["campaign.schedule.local_time.if_passed"]


def test_local_time_entirely_past_is_refused() -> None:
    schedule = local_time_schedule(date(2026, 6, 1), time(9, 0))
    # 09:00 on 1 June comes last in UTC-12, at 21:00 UTC.
    assert fields_of(schedule, utc(2026, 6, 1, 21, 0)) == []
    assert fields_of(schedule, utc(2026, 6, 1, 21, 1)) == ["campaign.schedule.local_time.date"]
    assert fields_of(local_time_schedule(date(2020, 1, 1), time(0, 0))) == [
        "campaign.schedule.local_time.date"
    ]


def test_best_time_window_checks() -> None:
    field = "campaign.schedule.best_time"
    assert fields_of(pb.Schedule(best_time=pb.BestTimeSchedule())) == [
        f"{field}.window_start",
        f"{field}.window_end",
    ]
    assert fields_of(best_time_schedule(NOW + timedelta(hours=1), NOW + timedelta(hours=1))) == [
        f"{field}.window_end"
    ]
    assert fields_of(best_time_schedule(NOW + timedelta(hours=2), NOW + timedelta(hours=1))) == [
        f"{field}.window_end"
    ]
    too_long = best_time_schedule(NOW, NOW + timedelta(days=7, seconds=1))
    assert fields_of(too_long) == [f"{field}.window_end"]
    passed = best_time_schedule(NOW - timedelta(days=2), NOW)
    assert problems_of(passed) == [(f"{field}.window_end", "the window has passed")]


def test_best_time_options_checks() -> None:
    field = "campaign.schedule.best_time"
    window = NOW, NOW + timedelta(days=1)
    assert fields_of(best_time_schedule(*window, min_opens=10_000)) == []
    assert fields_of(best_time_schedule(*window, min_opens=10_001)) == [f"{field}.min_opens"]
    assert fields_of(best_time_schedule(*window, fallback=3)) == [f"{field}.fallback_time"]
    assert fields_of(best_time_schedule(*window, fallback=7)) == [f"{field}.fallback"]
    bad_time = best_time_schedule(*window, fallback=3, fallback_time=time(8, 0))
    bad_time.best_time.fallback_time.hours = 25
    assert fields_of(bad_time) == [f"{field}.fallback_time.hours"]
    for seconds in (0, -60, 3661 * 86400):
        lookback = best_time_schedule(*window)
        lookback.best_time.lookback.CopyFrom(Duration(seconds=seconds))
        assert fields_of(lookback) == [f"{field}.lookback"], seconds


# Properties over the whole IANA set


def _offset(zone: ZoneInfo, at: datetime) -> timedelta | None:
    return at.astimezone(zone).utcoffset()


def _transitions(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants in ``year`` at which ``zone`` changes its UTC offset (to the second)."""
    found = []
    day = datetime(year, 1, 1, tzinfo=UTC)
    while day.year == year:
        after = day + timedelta(days=1)
        if _offset(zone, day) != _offset(zone, after):
            lo, hi = int(day.timestamp()), int(after.timestamp())
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _offset(zone, datetime.fromtimestamp(mid, UTC)) == _offset(zone, day):
                    lo = mid
                else:
                    hi = mid
            found.append(datetime.fromtimestamp(hi, UTC))
        day = after
    return found


# Zones that change their offset in 2026 (DST and the like): half the draws come from these.
SHIFTING_ZONES = [name for name in ZONES if _transitions(ZoneInfo(name), 2026)]


@dataclass(frozen=True)
class Wall:
    zone: ZoneInfo
    day: date
    time: time

    @property
    def naive(self) -> datetime:
        return datetime.combine(self.day, self.time)


@st.composite
def walls(draw: st.DrawFn, years: tuple[int, int] = (1990, 2040)) -> Wall:
    """A zone and a local wall time (to the minute), half of them within three hours of
    one of the zone's offset changes (where gaps and repeated hours are)."""
    zone = ZoneInfo(draw(st.sampled_from(ZONES) | st.sampled_from(SHIFTING_ZONES)))
    year = draw(st.integers(*years))
    near = draw(st.integers(0, 3)) > 0
    changes = _transitions(zone, year) if near else []
    if changes:
        change = draw(st.sampled_from(changes))
        before = (change - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        wall = before + timedelta(minutes=draw(st.integers(-70, 70)))
        wall = wall.replace(second=0, microsecond=0)
    else:
        wall = datetime(year, 1, 1) + timedelta(minutes=draw(st.integers(0, 364 * 1440)))
    return Wall(zone, wall.date(), wall.time())


def _shown(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def _exists(wall: Wall) -> bool:
    return any(
        _shown(wall.naive.replace(tzinfo=wall.zone, fold=fold).astimezone(UTC), wall.zone)
        == wall.naive
        for fold in (0, 1)
    )


@settings(max_examples=1000, deadline=None)
@given(walls())
def test_a_local_time_shows_the_requested_wall_time_in_the_zone(wall: Wall) -> None:
    result = due_at(
        local_time_schedule(wall.day, wall.time), zone=wall.zone, now=EARLY.replace(year=1900)
    )
    at = result.at
    shown = at.astimezone(wall.zone)
    just_before = _shown(at - timedelta(microseconds=1), wall.zone)
    # Nothing earlier shows the requested wall time or a later one.
    assert just_before < wall.naive
    if _exists(wall):
        assert shown.replace(tzinfo=None) == wall.naive
        assert shown.fold == 0  # the first of two occurrences
        repeated = wall.naive.replace(tzinfo=wall.zone, fold=1).astimezone(UTC) != at
        event("repeated wall time" if repeated else "plain wall time")
    else:
        event("wall time in a gap")
        # In a gap: the first instant after it, where the offset changes.
        assert shown.replace(tzinfo=None) > wall.naive
        assert _offset(wall.zone, at) != _offset(wall.zone, at - timedelta(seconds=1))


@settings(max_examples=300, deadline=None)
@given(walls(), st.integers(-3 * 86400, 3 * 86400), st.sampled_from([0, 1, 2, 3]))
def test_passed_time_policies_over_all_zones(wall: Wall, seconds: int, policy: int) -> None:
    local = localize(wall.zone, wall.day, wall.time)
    now = local + timedelta(seconds=seconds)
    result = due(local_time_schedule(wall.day, wall.time, policy), zone=wall.zone, now=now)
    event(result.basis.value if isinstance(result, Due) else "not due")
    if local >= now:
        assert result == Due(local, DueBasis.LOCAL_TIME)
    elif policy in (0, 1):
        assert result == NotDue(decision_pb2.REASON_CODE_LOCAL_TIME_PASSED)
    elif policy == 2:
        assert result == Due(now, DueBasis.LOCAL_TIME_SEND_NOW)
    else:
        # NEXT_DAY is never in the past, and at most a day or so (and an offset change) ahead.
        assert isinstance(result, Due)
        assert result.basis is DueBasis.LOCAL_TIME_NEXT_DAY
        assert now <= result.at < now + timedelta(days=2, hours=1)
        shown = _shown(result.at, wall.zone)
        assert shown.date() > wall.day
        assert shown.time() >= wall.time or shown.date() > wall.day + timedelta(days=1)


@settings(max_examples=300, deadline=None)
@given(walls(years=(2000, 2037)))
def test_fan_out_and_the_past_check_bound_every_zone(wall: Wall) -> None:
    """Every zone's instant lies between the fan-out start (plus its lead) and the
    instant the checks call the local time passed everywhere."""
    schedule = local_time_schedule(wall.day, wall.time)
    local = localize(wall.zone, wall.day, wall.time)
    assert fan_out_start(schedule, EARLY.replace(year=1990)) + FAN_OUT_LEAD <= local
    assert local <= datetime.combine(wall.day, wall.time, UTC) - LATEST_OFFSET
    assert datetime.combine(wall.day, wall.time, UTC) - EARLIEST_OFFSET <= local
    assert fields_of(schedule, local) == []


@settings(max_examples=300, deadline=None)
@given(
    walls(years=(2015, 2037)),
    st.sampled_from([3600, 86400, 3 * 86400, 7 * 86400]) | st.integers(60, 7 * 86400),
    st.floats(-0.5, 1.1),
    # Rich histograms, and sparse ones that leave the user to the fallback.
    st.lists(st.integers(0, 6), min_size=24, max_size=24)
    | st.lists(st.sampled_from([0] * 22 + [1]), min_size=24, max_size=24),
    st.none() | st.integers(0, 23),
    st.sampled_from([0, 1, 2, 3]),
    st.text(min_size=1, max_size=8),
)
def test_best_time_falls_in_the_window_at_the_chosen_hour(
    wall: Wall,
    length: int,
    since: float,
    opens: Sequence[int],
    app_hour: int | None,
    fallback: int,
    user: str,
) -> None:
    zone = wall.zone
    start = localize(zone, wall.day, wall.time)
    end = start + timedelta(seconds=length)
    now = start + timedelta(seconds=round(since * length))
    schedule = best_time_schedule(start, end, fallback=fallback, fallback_time=time(7, 45))
    history = delivery_messages.UserOpenHours(user_id=user, opens_by_utc_hour=opens)
    result = due_at(
        schedule,
        zone=zone,
        now=now,
        open_hours=history,
        app_best_local_hour=app_hour,
        user_id=user,
    )
    lo = max(start, now)
    event(result.basis.value)
    if result.basis in (DueBasis.BEST_TIME_WINDOW_START, DueBasis.BEST_TIME_NO_SLOT):
        assert result.at == lo
        return
    assert lo <= result.at < end
    if result.basis is DueBasis.BEST_TIME_FIXED_TIME:
        wall_time, shift = time(7, 45), timedelta(0)
    else:
        offset = _offset(zone, lo)
        assert offset is not None
        hour = best_local_hour(opens, offset, 3)
        if result.basis is DueBasis.BEST_TIME_USER:
            assert hour is not None
        else:
            assert result.basis is DueBasis.BEST_TIME_APP_HOUR
            assert hour is None
            assert app_hour is not None
            hour = app_hour
        wall_time, shift = time(hour), spread_offset(CAMPAIGN, user)
    slot_day = (result.at - shift).astimezone(zone).date()
    assert result.at == localize(zone, slot_day, wall_time) + shift
    # The first such instant: the day before was before the window (or now).
    assert localize(zone, slot_day - timedelta(days=1), wall_time) + shift < lo
