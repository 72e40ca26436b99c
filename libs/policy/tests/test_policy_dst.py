"""Table tests: quiet hours and calendar windows around DST transitions and odd zones.

Every expected instant is written out in UTC. Jitter is off (``Rules(jitter=0)``) so the
deferral lands exactly on the window end. Transitions used (2026):

- Europe/Berlin: 29 Mar 01:00Z (02:00 CET -> 03:00 CEST), 25 Oct 01:00Z (03:00 -> 02:00).
- America/New_York: 8 Mar 07:00Z (02:00 EST -> 03:00 EDT), 1 Nov 06:00Z (02:00 -> 01:00).
- Australia/Lord_Howe (+10:30 / +11): 4 Apr 15:00Z (02:00 -> 01:30), 3 Oct 15:30Z
  (02:00 -> 02:30): a 30-minute shift.
- Pacific/Chatham (+12:45 / +13:45): 4 Apr 14:00Z (03:45 -> 02:45), 26 Sep 14:00Z
  (02:45 -> 03:45).
- Asia/Kolkata: +05:30, no DST.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from pushwarden.policy import (
    ALL_WEEKDAYS,
    CalendarWindow,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    Message,
    MessageKind,
    Outcome,
    QuietHours,
    QuietWindow,
    Reason,
    Recipient,
    Rules,
    decide,
    localize,
)
from pushwarden.policy.zones import day_bounds, week_bounds

PROMO = Category("promo", MessageKind.MARKETING)


def z(text: str) -> datetime:
    """``2026-03-29T05:00Z`` → aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC)


def quiet(start: str, end: str, weekdays: frozenset[int] = ALL_WEEKDAYS) -> QuietHours:
    return QuietHours((QuietWindow(time.fromisoformat(start), time.fromisoformat(end), weekdays),))


def run(zone: str, hours: QuietHours, now: datetime) -> tuple[Outcome, datetime | None]:
    rules = Rules(quiet_hours=hours, jitter=timedelta(0), default_zone="Europe/Berlin")
    decision = decide(Message("m", PROMO), Recipient("u", zone=zone), (), rules, now)
    return decision.outcome, decision.until


NIGHT = ("22:00", "07:00")
LUNCH = ("13:00", "14:00")

QUIET_CASES = [
    # Europe/Berlin, spring forward: the night is an hour shorter.
    ("berlin-spring-before", "Europe/Berlin", NIGHT, "2026-03-28T22:30Z", "2026-03-29T05:00Z"),
    ("berlin-spring-after-gap", "Europe/Berlin", NIGHT, "2026-03-29T01:30Z", "2026-03-29T05:00Z"),
    (
        "berlin-spring-window-start",
        "Europe/Berlin",
        NIGHT,
        "2026-03-28T21:00Z",
        "2026-03-29T05:00Z",
    ),
    ("berlin-spring-just-before", "Europe/Berlin", NIGHT, "2026-03-28T20:59Z", None),
    ("berlin-spring-at-end", "Europe/Berlin", NIGHT, "2026-03-29T05:00Z", None),
    # Europe/Berlin, fall back: the night is an hour longer; 02:30 happens twice.
    ("berlin-fall-before", "Europe/Berlin", NIGHT, "2026-10-24T21:00Z", "2026-10-25T06:00Z"),
    ("berlin-fall-second-0230", "Europe/Berlin", NIGHT, "2026-10-25T01:30Z", "2026-10-25T06:00Z"),
    ("berlin-fall-0630-cet", "Europe/Berlin", NIGHT, "2026-10-25T05:30Z", "2026-10-25T06:00Z"),
    # An end inside the gap moves to the first instant after it (03:00 CEST = 01:00Z).
    (
        "berlin-end-in-gap",
        "Europe/Berlin",
        ("22:00", "02:30"),
        "2026-03-28T23:00Z",
        "2026-03-29T01:00Z",
    ),
    # A start inside the gap also moves there: at 01:45 CET the window has not begun.
    ("berlin-start-in-gap-before", "Europe/Berlin", ("02:30", "06:00"), "2026-03-29T00:45Z", None),
    (
        "berlin-start-in-gap-at",
        "Europe/Berlin",
        ("02:30", "06:00"),
        "2026-03-29T01:00Z",
        "2026-03-29T04:00Z",
    ),
    # A repeated end uses its first occurrence (02:30 CEST = 00:30Z) ...
    (
        "berlin-end-ambiguous",
        "Europe/Berlin",
        ("22:00", "02:30"),
        "2026-10-25T00:00Z",
        "2026-10-25T00:30Z",
    ),
    # ... so the second pass through 02:15 (CET) is already outside.
    (
        "berlin-end-ambiguous-second-pass",
        "Europe/Berlin",
        ("22:00", "02:30"),
        "2026-10-25T01:15Z",
        None,
    ),
    (
        "berlin-lunch-spring-sunday",
        "Europe/Berlin",
        LUNCH,
        "2026-03-29T11:30Z",
        "2026-03-29T12:00Z",
    ),
    ("berlin-lunch-winter", "Europe/Berlin", LUNCH, "2026-11-23T12:10Z", "2026-11-23T13:00Z"),
    # America/New_York.
    ("ny-spring", "America/New_York", NIGHT, "2026-03-08T04:00Z", "2026-03-08T11:00Z"),
    ("ny-spring-start", "America/New_York", NIGHT, "2026-03-08T03:00Z", "2026-03-08T11:00Z"),
    ("ny-fall-first-0130", "America/New_York", NIGHT, "2026-11-01T05:30Z", "2026-11-01T12:00Z"),
    ("ny-fall-second-0130", "America/New_York", NIGHT, "2026-11-01T06:30Z", "2026-11-01T12:00Z"),
    ("ny-lunch", "America/New_York", LUNCH, "2026-11-23T18:15Z", "2026-11-23T19:00Z"),
    ("ny-lunch-before", "America/New_York", LUNCH, "2026-11-23T17:59Z", None),
    ("ny-lunch-summer", "America/New_York", LUNCH, "2026-07-01T17:00Z", "2026-07-01T18:00Z"),
    # Australia/Lord_Howe: 30-minute DST.
    ("lordhowe-spring", "Australia/Lord_Howe", NIGHT, "2026-10-03T12:00Z", "2026-10-03T20:00Z"),
    (
        "lordhowe-end-in-gap",
        "Australia/Lord_Howe",
        ("22:00", "02:15"),
        "2026-10-03T12:00Z",
        "2026-10-03T15:30Z",
    ),
    ("lordhowe-fall", "Australia/Lord_Howe", NIGHT, "2026-04-04T14:00Z", "2026-04-04T20:30Z"),
    (
        "lordhowe-end-ambiguous",
        "Australia/Lord_Howe",
        ("22:00", "01:45"),
        "2026-04-04T14:30Z",
        "2026-04-04T14:45Z",
    ),
    (
        "lordhowe-end-ambiguous-second",
        "Australia/Lord_Howe",
        ("22:00", "01:45"),
        "2026-04-04T15:05Z",
        None,
    ),
    ("lordhowe-lunch", "Australia/Lord_Howe", LUNCH, "2026-11-23T02:20Z", "2026-11-23T03:00Z"),
    # Asia/Kolkata: half-hour offset, no DST.
    ("kolkata-night", "Asia/Kolkata", NIGHT, "2026-11-23T17:00Z", "2026-11-24T01:30Z"),
    (
        "kolkata-night-early-morning",
        "Asia/Kolkata",
        NIGHT,
        "2026-11-23T00:00Z",
        "2026-11-23T01:30Z",
    ),
    ("kolkata-lunch", "Asia/Kolkata", LUNCH, "2026-11-23T08:00Z", "2026-11-23T08:30Z"),
    ("kolkata-lunch-after", "Asia/Kolkata", LUNCH, "2026-11-23T08:30Z", None),
    # Pacific/Chatham: +12:45 / +13:45.
    ("chatham-spring", "Pacific/Chatham", NIGHT, "2026-09-26T10:00Z", "2026-09-26T17:15Z"),
    (
        "chatham-end-in-gap",
        "Pacific/Chatham",
        ("22:00", "03:00"),
        "2026-09-26T10:00Z",
        "2026-09-26T14:00Z",
    ),
    ("chatham-fall", "Pacific/Chatham", NIGHT, "2026-04-04T13:00Z", "2026-04-04T18:15Z"),
    ("chatham-lunch", "Pacific/Chatham", LUNCH, "2026-11-22T23:30Z", "2026-11-23T00:15Z"),
]


@pytest.mark.parametrize(
    ("zone", "window", "now", "until"),
    [case[1:] for case in QUIET_CASES],
    ids=[case[0] for case in QUIET_CASES],
)
def test_quiet_hours_around_transitions(
    zone: str, window: tuple[str, str], now: str, until: str | None
) -> None:
    outcome, got = run(zone, quiet(*window), z(now))
    if until is None:
        assert (outcome, got) == (Outcome.ALLOW, None)
    else:
        assert (outcome, got) == (Outcome.DEFER, z(until))


def test_per_weekday_window_only_on_its_days() -> None:
    weekend_nights = quiet("22:00", "07:00", frozenset({4, 5}))  # starts Friday and Saturday
    # Saturday 28 March 23:30 CET: a Saturday night.
    assert run("Europe/Berlin", weekend_nights, z("2026-03-28T22:30Z")) == (
        Outcome.DEFER,
        z("2026-03-29T05:00Z"),
    )
    # Sunday 29 March 23:00 CEST: no window starts on Sunday.
    assert run("Europe/Berlin", weekend_nights, z("2026-03-29T21:00Z")) == (Outcome.ALLOW, None)
    # Monday 30 March 06:00 CEST is the tail of nothing: Sunday's window does not exist.
    assert run("Europe/Berlin", weekend_nights, z("2026-03-30T04:00Z")) == (Outcome.ALLOW, None)
    # Sunday 06:00 CEST is still the tail of Saturday's window.
    assert run("Europe/Berlin", weekend_nights, z("2026-03-29T04:00Z")) == (
        Outcome.DEFER,
        z("2026-03-29T05:00Z"),
    )


def test_adjacent_windows_chain_to_the_last_end() -> None:
    hours = QuietHours(
        (
            QuietWindow(time(22, 0), time(7, 0)),
            QuietWindow(time(7, 0), time(8, 30), frozenset({6})),  # Sunday lie-in
        )
    )
    # Saturday night into Sunday: 07:00 CEST ends one window and starts the next.
    assert run("Europe/Berlin", hours, z("2026-03-28T22:30Z")) == (
        Outcome.DEFER,
        z("2026-03-29T06:30Z"),
    )


def test_window_wholly_inside_a_gap_vanishes_that_night() -> None:
    hours = quiet("02:10", "02:50")
    assert run("Europe/Berlin", hours, z("2026-03-29T01:00Z")) == (Outcome.ALLOW, None)
    # The next night it exists again: 02:10 CEST = 00:10Z.
    assert run("Europe/Berlin", hours, z("2026-03-30T00:20Z")) == (
        Outcome.DEFER,
        z("2026-03-30T00:50Z"),
    )


LOCALIZE_CASES = [
    ("Europe/Berlin", date(2026, 3, 29), "02:30", "2026-03-29T01:00Z"),  # gap
    ("Europe/Berlin", date(2026, 3, 29), "03:00", "2026-03-29T01:00Z"),
    ("Europe/Berlin", date(2026, 10, 25), "02:30", "2026-10-25T00:30Z"),  # fold=0
    ("America/New_York", date(2026, 3, 8), "02:15", "2026-03-08T07:00Z"),
    ("America/New_York", date(2026, 11, 1), "01:30", "2026-11-01T05:30Z"),
    ("Australia/Lord_Howe", date(2026, 10, 4), "02:10", "2026-10-03T15:30Z"),
    ("Australia/Lord_Howe", date(2026, 4, 5), "01:40", "2026-04-04T14:40Z"),
    ("Pacific/Chatham", date(2026, 9, 27), "03:00", "2026-09-26T14:00Z"),
    ("Pacific/Chatham", date(2026, 4, 5), "03:00", "2026-04-04T13:15Z"),
    ("Asia/Kolkata", date(2026, 11, 23), "00:00", "2026-11-22T18:30Z"),
    ("Asia/Beirut", date(2026, 3, 29), "00:00", "2026-03-28T22:00Z"),  # midnight in a gap
    ("America/Santiago", date(2026, 9, 6), "00:00", "2026-09-06T04:00Z"),
]


@pytest.mark.parametrize(("zone", "day", "wall", "expected"), LOCALIZE_CASES)
def test_localize_gap_and_fold_rules(zone: str, day: date, wall: str, expected: str) -> None:
    assert localize(ZoneInfo(zone), day, time.fromisoformat(wall)) == z(expected)


@pytest.mark.parametrize(
    ("zone", "day", "start", "end"),
    [
        ("Europe/Berlin", date(2026, 3, 29), "2026-03-28T23:00Z", "2026-03-29T22:00Z"),  # 23 h
        ("Europe/Berlin", date(2026, 10, 25), "2026-10-24T22:00Z", "2026-10-25T23:00Z"),  # 25 h
        ("Australia/Lord_Howe", date(2026, 10, 4), "2026-10-03T13:30Z", "2026-10-04T13:00Z"),
        ("Asia/Beirut", date(2026, 3, 29), "2026-03-28T22:00Z", "2026-03-29T21:00Z"),
        ("Pacific/Chatham", date(2026, 11, 23), "2026-11-22T10:15Z", "2026-11-23T10:15Z"),
    ],
)
def test_calendar_day_bounds(zone: str, day: date, start: str, end: str) -> None:
    assert day_bounds(ZoneInfo(zone), day.toordinal()) == (z(start), z(end))


def test_iso_week_starts_monday_local() -> None:
    # Wednesday 25 March 2026 in Berlin: the week is Mon 23 Mar 00:00 CET to Mon 30 Mar
    # 00:00 CEST, 167 hours because of the spring-forward Sunday.
    start, end = week_bounds(ZoneInfo("Europe/Berlin"), date(2026, 3, 25).toordinal())
    assert (start, end) == (z("2026-03-22T23:00Z"), z("2026-03-29T22:00Z"))
    assert end - start == timedelta(hours=167)


def test_calendar_day_cap_defers_to_local_midnight_after_short_day() -> None:
    rules = Rules(caps=(CapRule(CapScope.ALL_MARKETING, 1, CalendarWindow.DAY),))
    sent = ContactEntry(z("2026-03-29T08:00Z"), "promo", MessageKind.MARKETING)
    decision = decide(
        Message("m", PROMO),
        Recipient("u", zone="Europe/Berlin"),
        [sent],
        rules,
        z("2026-03-29T10:00Z"),
    )
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    assert decision.until == z("2026-03-29T22:00Z")  # 00:00 CEST on Monday 30 March


def test_calendar_week_cap_in_kolkata() -> None:
    rules = Rules(caps=(CapRule(CapScope.ALL_MARKETING, 2, CalendarWindow.WEEK),))
    sends = [
        ContactEntry(z("2026-11-23T04:00Z"), "promo", MessageKind.MARKETING),  # Mon 09:30 IST
        ContactEntry(z("2026-11-25T04:00Z"), "promo", MessageKind.MARKETING),
    ]
    decision = decide(
        Message("m", PROMO),
        Recipient("u", zone="Asia/Kolkata"),
        sends,
        rules,
        z("2026-11-27T10:00Z"),
    )
    assert decision.until == z("2026-11-29T18:30Z")  # Monday 30 Nov 00:00 IST
    # A send on Sunday 22 Nov 23:59 IST belongs to the previous week and does not count.
    earlier = [ContactEntry(z("2026-11-22T18:29Z"), "promo", MessageKind.MARKETING), sends[0]]
    decision = decide(
        Message("m", PROMO),
        Recipient("u", zone="Asia/Kolkata"),
        earlier,
        rules,
        z("2026-11-27T10:00Z"),
    )
    assert decision.outcome is Outcome.ALLOW
