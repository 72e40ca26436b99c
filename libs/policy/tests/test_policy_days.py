"""The engine's day machinery, against independent oracles.

``zones.day_split`` / ``local_day`` (the local day of an instant without converting it)
are checked against ``astimezone``; ``clock.day_view`` (a local day's quiet spans, their
edges for one bisect, and the first quiet instant after each span) against a scan of
``quiet_window_at``; ``plan.compile_caps`` against the declared rule order; and the fast
quiet-hours deferral against the reference evaluator where its shortcut must not apply.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    FrequencyPreference,
    Message,
    MessageKind,
    Outcome,
    QuietHours,
    QuietWindow,
    Reason,
    Recipient,
    Rules,
    decide,
)
from pushwarden.policy.clock import NEVER, day_view, quiet_window_at, view_at
from pushwarden.policy.plan import (
    OtherCap,
    RollingCap,
    ScopedCap,
    ScopedGroup,
    caps_plan,
    compile_caps,
    rules_plan,
)
from pushwarden.policy.zones import day_bounds, day_split, local_day, local_ordinal

# London changes offset at 01:00Z, so on its spring day one UTC day holds two local
# midnights; Kiritimati (+14) and Pago Pago (-11) put the local date change far from 00Z.
ZONES = [
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "America/St_Johns",
]
TRANSITION_WEEKS = [datetime(2026, 3, 26, tzinfo=UTC), datetime(2026, 10, 22, tzinfo=UTC)]
MINUTE = timedelta(minutes=1)
TICK = timedelta(microseconds=1)


@pytest.mark.parametrize("name", ZONES)
def test_local_day_matches_astimezone_every_quarter_hour(name: str) -> None:
    zone = ZoneInfo(name)
    for start in [*TRANSITION_WEEKS, datetime(2026, 4, 1, 12, 7, tzinfo=UTC)]:
        for step in range(14 * 24 * 4):
            at = start + timedelta(minutes=15 * step)
            for instant in (at, at - TICK):
                ordinal, first, end = local_day(zone, instant)
                assert ordinal == instant.astimezone(zone).toordinal(), instant
                assert (first, end) == day_bounds(zone, ordinal)
                assert first <= instant < end


@pytest.mark.parametrize("name", ZONES)
def test_day_split_edges_are_local_midnights(name: str) -> None:
    zone = ZoneInfo(name)
    for start in TRANSITION_WEEKS:
        for day in range(14):
            utc_day = start.toordinal() + day
            split = day_split(zone, utc_day)
            if split is None:  # the zone changes offset that UTC day: exact path
                continue
            switch, before, after = split
            assert after[0] == before[0] + 1
            assert switch == before[2] == after[1]  # the switch is the next local midnight
            for instant in (switch - TICK, switch):
                if instant.toordinal() == utc_day:
                    expected = instant.astimezone(zone).toordinal()
                    assert (before if instant < switch else after)[0] == expected


def test_random_instants_in_every_zone_agree_with_astimezone() -> None:
    rng = random.Random(11)
    names = sorted(ZONES)
    for _ in range(20_000):
        zone = ZoneInfo(rng.choice(names))
        at = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(4 * 366 * 86400))
        assert local_day(zone, at)[0] == local_ordinal(zone, at) == at.astimezone(zone).toordinal()


def window(start: str, end: str, days: frozenset[int] | None = None) -> QuietWindow:
    if days is None:
        return QuietWindow(time.fromisoformat(start), time.fromisoformat(end))
    return QuietWindow(time.fromisoformat(start), time.fromisoformat(end), days)


DISJOINT = [
    QuietHours((window("22:00", "07:00"),)),
    QuietHours((window("22:00", "07:00", frozenset(range(5))), window("13:00", "14:00"))),
    QuietHours((window("01:30", "02:30"),)),  # inside Europe's spring-forward gap
    QuietHours((window("20:00", "06:00", frozenset({4})),)),  # Fridays only: a week's gap
]


def first_quiet_from(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> datetime:
    """Oracle: scan forward minute by minute (window edges lie on whole minutes, or on a
    DST transition, which is a whole minute too) for the first quiet instant."""
    probe = at
    for _ in range(9 * 24 * 60):
        if quiet_window_at(quiet, zone, probe, local_ordinal(zone, probe)) is not None:
            return probe
        probe = (probe + MINUTE).replace(second=0, microsecond=0)
    return NEVER


@pytest.mark.parametrize("quiet", DISJOINT, ids=["night", "weekdays+lunch", "gap", "fridays"])
@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])
def test_day_view_edges_and_clears_match_a_scan(quiet: QuietHours, name: str) -> None:
    zone = ZoneInfo(name)
    for start in TRANSITION_WEEKS:
        first = start.astimezone(zone).toordinal()
        for ordinal in range(first, first + 7):
            view = day_view(quiet, zone, ordinal)
            assert view.ordinal == ordinal
            assert (view.start, view.end) == day_bounds(zone, ordinal)
            spans, edges, clears = view.spans, view.edges, view.clears
            assert edges is not None  # these windows never overlap
            assert list(edges) == [edge for span in spans for edge in span]
            assert list(edges) == sorted(edges)
            assert len(clears) == len(spans)
            for (_, end), clear in zip(spans, clears, strict=True):
                assert clear == first_quiet_from(quiet, zone, end)


def test_overlapping_windows_have_no_edges() -> None:
    quiet = QuietHours((window("22:00", "07:00"), window("06:00", "08:00")))
    view = day_view(quiet, ZoneInfo("Europe/Berlin"), datetime(2026, 3, 27).toordinal())
    assert view.edges is None
    assert view.clears == ()


def test_view_at_takes_the_exact_path_on_a_transition_day() -> None:
    zone = ZoneInfo("Europe/London")
    quiet = DISJOINT[0]
    utc_day = datetime(2026, 3, 29).toordinal()
    assert day_split(zone, utc_day) is None
    for hour in range(24):
        at = datetime(2026, 3, 29, hour, 30, tzinfo=UTC)
        assert view_at(quiet, zone, at).ordinal == at.astimezone(zone).toordinal()


def test_compiled_caps_group_rules_and_keep_the_rest_in_order() -> None:
    rules = Rules(
        caps=(
            CapRule(CapScope.CAMPAIGN, 1, CalendarWindow.DAY, name="a"),
            CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24), name="b"),
            CapRule(CapScope.CATEGORY, 1, CalendarWindow.DAY, CapAction.DROP, name="c"),
            CapRule(CapScope.ALL_MARKETING, 5, CalendarWindow.WEEK, name="d"),
            CapRule(CapScope.CATEGORY, 2, timedelta(hours=6), target_id="x", name="e"),
            CapRule(CapScope.ALL_MARKETING, 9, timedelta(days=7), CapAction.DROP, name="f"),
            CapRule(CapScope.CATEGORY, 2, timedelta(hours=6), count_transactional=True, name="g"),
        )
    )
    rolling, scoped, other = compile_caps(rules.caps)
    assert rolling == (
        RollingCap(3, timedelta(hours=24), False, False),
        RollingCap(9, timedelta(days=7), True, False),
    )
    assert scoped == (
        ScopedGroup(False, (ScopedCap(1, None, True, True, False),)),  # per category
        ScopedGroup(True, (ScopedCap(1, None, True, False, False),)),  # per campaign
    )
    assert [rule.target for rule in other] == [None, "x", None]
    assert [rule.limit for rule in other] == [5, 2, 2]
    assert isinstance(other[0], OtherCap)
    plan = rules_plan(rules)
    assert plan.caps == (rolling, scoped, other)
    assert rules_plan(rules) is plan  # memoised by identity
    # The opt-down rule a user adds is always evaluated last.
    parts = caps_plan(rules, plan, FrequencyPreference.DAILY_MAX, 0)
    assert parts[:2] == (rolling, scoped)
    assert parts.other[:-1] == other
    assert parts.other[-1].preference is True


def test_empty_id_sets_are_shared() -> None:
    one = Recipient("u1", category_opt_outs=frozenset(), holdout_sources=frozenset())
    other = Recipient("u2")
    assert one.category_opt_outs is other.category_opt_outs is other.topic_opt_outs
    assert one.holdout_sources is other.holdout_sources
    assert Recipient("u3", category_opt_outs=frozenset({"a"})).category_opt_outs == {"a"}


PROMO = Category("promo", MessageKind.MARKETING)
NOW = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # 06:00 in Berlin


def test_jitter_is_cut_to_a_short_gap_between_windows() -> None:
    # 22:00-07:00 then 07:10-08:00: a 30-minute jitter would land most users in the
    # second window; the spread is cut to the ten allowed minutes instead.
    quiet = QuietHours((window("22:00", "07:00"), window("07:10", "08:00")))
    rules = Rules(quiet_hours=quiet, default_zone="Europe/Berlin")
    minutes = set()
    for index in range(300):
        recipient = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("m", PROMO), recipient, (), rules, NOW)
        assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.QUIET_HOURS)
        assert decision.until is not None
        local = decision.until.astimezone(ZoneInfo("Europe/Berlin")).time()
        assert time(7, 0) <= local < time(7, 10)
        minutes.add(local.minute)
        assert len(decision.trace) > 0  # the reference evaluator agrees (it checks)
    assert minutes == set(range(10))  # still spread over the whole gap


def test_a_jitter_window_of_days_still_respects_the_horizon_check() -> None:
    rules = Rules(
        quiet_hours=DISJOINT[0],
        jitter=timedelta(days=2),
        digest_grace=timedelta(days=3),
        default_zone="Europe/Berlin",
    )
    for index in range(100):
        recipient = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("m", PROMO), recipient, (), rules, NOW)
        assert decision.outcome is Outcome.DEFER
        assert decision.until is not None
        assert decision.until > NOW
        assert len(decision.trace) > 0


def test_a_window_of_the_next_day_can_hold_a_span_end() -> None:
    # Friday 20:00 to Saturday 06:00, and Saturday 05:00-07:00: Friday's spans are
    # disjoint, but the end of its night lies inside Saturday's morning window, so the
    # first quiet instant after it is the end itself (no shortcut for that deferral).
    quiet = QuietHours(
        (window("20:00", "06:00", frozenset({4})), window("05:00", "07:00", frozenset({5})))
    )
    zone = ZoneInfo("Europe/Berlin")
    friday = datetime(2026, 11, 27).toordinal()
    view = day_view(quiet, zone, friday)
    assert view.edges is not None
    (_, end), clear = view.spans[-1], view.clears[-1]
    assert clear == end == first_quiet_from(quiet, zone, end)
    assert view.rooms[-1] == 0
    assert day_view(quiet, zone, friday + 1).edges is None  # Saturday's spans overlap
    rules = Rules(quiet_hours=quiet, default_zone="Europe/Berlin")
    friday_night = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    for index in range(50):
        recipient = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("m", PROMO), recipient, (), rules, friday_night)
        assert decision.until is not None
        assert decision.until.astimezone(zone).time() >= time(7, 0)
        assert len(decision.trace) > 0
