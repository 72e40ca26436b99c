"""The structured trace carries the numbers; ``explain`` turns them into sentences."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    CapStep,
    Category,
    Check,
    ContactEntry,
    DigestSlot,
    FrequencyPreference,
    GateStep,
    Hop,
    Message,
    MessageKind,
    Outcome,
    QuietHours,
    QuietStep,
    QuietWindow,
    Reason,
    Recipient,
    Rules,
    ScheduleStep,
    ZoneSource,
    ZoneStep,
    decide,
    explain,
    format_duration,
)

PROMO = Category("promo", MessageKind.MARKETING)
ROLLING = CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24))
WEEK = CapRule(CapScope.ALL_MARKETING, 10, timedelta(days=7))
PER_CATEGORY = CapRule(CapScope.CATEGORY, 1, CalendarWindow.DAY, CapAction.DROP, name="daily")
RULES = Rules(
    caps=(ROLLING, WEEK, PER_CATEGORY),
    quiet_hours=QuietHours((QuietWindow(time(22), time(7)),)),
    default_zone="Europe/Berlin",
)
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # Monday 09:00 in Berlin
HISTORY = [
    ContactEntry(datetime(2026, 11, 22, 9, 12, tzinfo=UTC), "news", MessageKind.MARKETING),
    ContactEntry(datetime(2026, 11, 22, 15, 0, tzinfo=UTC), "news", MessageKind.MARKETING),
    ContactEntry(datetime(2026, 11, 23, 7, 30, tzinfo=UTC), "deals", MessageKind.MARKETING),
    ContactEntry(datetime(2026, 11, 23, 7, 45, tzinfo=UTC), "orders", MessageKind.TRANSACTIONAL),
]
USER = Recipient("u1", zone="Europe/Berlin")


def test_trace_holds_every_rule_with_its_numbers() -> None:
    decision = decide(Message("m", PROMO), USER, HISTORY, RULES, NOW)
    assert decision.outcome is Outcome.DEFER
    assert decision.reason is Reason.CAPPED
    oldest_leaves = datetime(2026, 11, 23, 9, 12, tzinfo=UTC)
    assert decision.until == oldest_leaves
    gates = decision.trace[:11]
    assert [s.check for s in gates] == [
        Check.ERASED,
        Check.SUPPRESSION,
        Check.HOLDOUT,
        Check.DUPLICATE,
        Check.EXPIRY,
        Check.CHANNEL_CONSENT,
        Check.MARKETING_CONSENT,
        Check.CATEGORY_CONSENT,
        Check.TOPIC_CONSENT,
        Check.OS_PERMISSION,
        Check.DEVICES,
    ]
    assert all(isinstance(s, GateStep) and s.passed for s in gates)
    zone, rolling, week, category, quiet, schedule = decision.trace[11:]
    assert zone == ZoneStep(Check.ZONE, True, ZoneSource.PROFILE, "Europe/Berlin")
    assert rolling == CapStep(
        Check.CAP, False, ROLLING, 3, 3, NOW - timedelta(hours=24), oldest_leaves, oldest_leaves
    )
    assert week == CapStep(
        Check.CAP,
        True,
        WEEK,
        3,
        10,
        NOW - timedelta(days=7),
        oldest_leaves + timedelta(days=6),
        None,
    )
    day_start = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # Monday 00:00 CET
    assert category == CapStep(Check.CAP, True, PER_CATEGORY, 0, 1, day_start, None, None)
    assert isinstance(quiet, QuietStep)
    assert quiet[:2] == (Check.QUIET_HOURS, True)
    assert quiet.at == NOW
    assert schedule == ScheduleStep(
        Check.SCHEDULE, True, oldest_leaves, (Hop(Check.CAP, oldest_leaves, 0),)
    )


def test_explain_renders_the_trace() -> None:
    decision = decide(Message("m", PROMO), USER, HISTORY, RULES, NOW)
    lines = explain(decision)
    assert lines[11:] == [
        "time zone Europe/Berlin (from the user's profile)",
        "3 of 3 marketing pushes in the rolling 24 h; the oldest leaves the window at "
        "2026-11-23T09:12Z; over the cap (DEFER)",
        "3 of 10 marketing pushes in the rolling 7 d; the oldest leaves the window at "
        "2026-11-29T09:12Z",
        "cap 'daily': 0 of 1 pushes in this category in this calendar day (Europe/Berlin)",
        "local time Mon 09:00 (Europe/Berlin): outside quiet hours",
        "earliest instant every rule allows: 2026-11-23T09:12Z (caps free → 2026-11-23T09:12Z)",
        "→ DEFER until 2026-11-23T09:12Z (CAPPED)",
    ]
    assert lines[0] == "user is not erased"


def test_explain_quiet_hours_and_jitter() -> None:
    night = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 23:30 CET
    decision = decide(Message("m", PROMO), USER, [], RULES, night)
    lines = explain(decision)
    assert (
        "local time Mon 23:30 (Europe/Berlin): inside quiet hours 22:00–07:00, ending at "
        in (lines[-3])
    )
    assert lines[-3].endswith("2026-11-24T06:00Z")
    jitter = decision.until - datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # type: ignore[operator]
    assert lines[-2].startswith("earliest instant every rule allows: 2026-11-24T06:00Z, spread to ")
    assert f"quiet hours end, +{format_duration(jitter)} jitter" in lines[-2]


def test_explain_drop_and_allow() -> None:
    opted = Recipient("u1", zone="Europe/Berlin", marketing_opt_out=True)
    assert explain(decide(Message("m", PROMO), opted, [], RULES, NOW))[-2:] == [
        "user opted out of marketing",
        "→ DROP (OPTED_OUT)",
    ]
    allowed = decide(Message("m", PROMO), USER, [], RULES, NOW)
    assert explain(allowed)[-1] == "→ ALLOW: send now"
    receipt = decide(
        Message("r", Category("orders", MessageKind.TRANSACTIONAL)), USER, [], RULES, NOW
    )
    assert "transactional category" in explain(receipt)[-2]


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=24)) == "24 h"
    assert format_duration(timedelta(days=7)) == "7 d"
    assert format_duration(timedelta(minutes=90)) == "1 h 30 min"
    assert format_duration(timedelta(seconds=754)) == "12 min 34 s"
    assert format_duration(timedelta(0)) == "0 s"


def test_hot_path_builds_no_strings() -> None:
    decision = decide(Message("m", PROMO), USER, HISTORY, RULES, NOW)

    def strings(value: object) -> int:
        if isinstance(value, str):
            return 1
        if isinstance(value, tuple):
            return sum(strings(v) for v in value)
        return 0

    # The only strings in a trace are the zone's IANA key, interned by the zone cache.
    assert strings(tuple(s for s in decision.trace if not isinstance(s, ZoneStep))) == 0


def test_explain_digest_and_missing_zone() -> None:
    digest_user = Recipient(
        "u1",
        zone="Europe/Berlin",
        frequency=FrequencyPreference.DIGEST,
        digest=DigestSlot(at=time(18, 30)),
    )
    no_jitter = Rules(quiet_hours=RULES.quiet_hours, jitter=timedelta(0), default_zone="UTC")
    lines = explain(decide(Message("m", PROMO), digest_user, [], no_jitter, NOW))
    assert lines[-3:] == [
        "digest slot 2026-11-22T17:30Z to 2026-11-22T19:30Z is not open now",
        "earliest instant every rule allows: 2026-11-23T17:30Z "
        "(next digest slot → 2026-11-23T17:30Z)",
        "→ DEFER until 2026-11-23T17:30Z (DIGEST)",
    ]
    nowhere = explain(decide(Message("m", PROMO), Recipient("u"), [], Rules(), NOW))
    assert nowhere[-2:] == [
        "no time zone on the profile, the device or the app default",
        "→ DROP (NO_TIMEZONE)",
    ]


def test_explain_names_the_users_opt_down() -> None:
    two_a_day = Recipient(
        "u1", zone="Europe/Berlin", frequency=FrequencyPreference.DAILY_MAX, frequency_max=2
    )
    history = [
        ContactEntry(datetime(2026, 11, 23, 7, 0, tzinfo=UTC), "news", MessageKind.MARKETING),
        ContactEntry(datetime(2026, 11, 23, 7, 30, tzinfo=UTC), "deals", MessageKind.MARKETING),
    ]
    rules = Rules(default_zone="UTC")
    decision = decide(Message("m", PROMO), two_a_day, history, rules, NOW)
    assert decision.reason is Reason.FREQUENCY_PREFERENCE
    lines = explain(decision)
    assert lines[-4] == (
        "the user's opt-down: 2 of 2 marketing pushes in this calendar day (Europe/Berlin); "
        "the window resets at 2026-11-23T23:00Z; over the cap (DEFER)"
    )
    assert lines[-1] == "→ DEFER until 2026-11-23T23:00Z (FREQUENCY_PREFERENCE)"
