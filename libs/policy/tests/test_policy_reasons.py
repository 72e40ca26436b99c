"""One test per reason code, plus the zone chain, jitter, digest and validation."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from pushwarden.policy import (
    OPT_DOWN_RULE,
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    CapStep,
    Category,
    Check,
    ContactEntry,
    DigestPeriod,
    DigestSlot,
    FrequencyPreference,
    GateStep,
    Message,
    MessageKind,
    Outcome,
    QuietHours,
    QuietWindow,
    Reason,
    Recipient,
    Rules,
    ScheduleStep,
    ZoneSource,
    ZoneStep,
    decide,
)
from pushwarden.policy.clock import jitter_seconds

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday, 13:00 in Berlin
PROMO = Category("promo", MessageKind.MARKETING)
ORDERS = Category("orders", MessageKind.TRANSACTIONAL)
SECURITY = Category("security", MessageKind.TRANSACTIONAL, opt_out_allowed=False)
NIGHT = QuietHours((QuietWindow(time(22), time(7)),))
RULES = Rules(
    caps=(CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24)),),
    quiet_hours=NIGHT,
    default_zone="Europe/Berlin",
)
USER = Recipient("u1", zone="Europe/Berlin")
AD = Message("spring-sale", PROMO, campaign_id="camp-1", expires_at=NOW + timedelta(days=2))
RECEIPT = Message("receipt", ORDERS, send_key="order-42")


def sends(
    *hours_ago: float, category: str = "promo", campaign: str | None = None
) -> list[ContactEntry]:
    return [
        ContactEntry(NOW - timedelta(hours=h), category, MessageKind.MARKETING, campaign)
        for h in hours_ago
    ]


def outcome(
    message: Message = AD,
    recipient: Recipient = USER,
    history: list[ContactEntry] | None = None,
    rules: Rules = RULES,
    now: datetime = NOW,
) -> tuple[Outcome, Reason | None]:
    decision = decide(message, recipient, history or [], rules, now)
    return decision.outcome, decision.reason


def test_allow() -> None:
    assert outcome() == (Outcome.ALLOW, None)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"erased": True}, Reason.ERASED),
        ({"suppressed": True}, Reason.SUPPRESSED),
        ({"holdout_sources": frozenset({"camp-1"})}, Reason.HOLDOUT),
        ({"push_consent": False}, Reason.OPTED_OUT),
        ({"marketing_opt_out": True}, Reason.OPTED_OUT),
        ({"category_opt_outs": frozenset({"promo"})}, Reason.CATEGORY_OPTED_OUT),
        ({"os_permission": False}, Reason.NO_PERMISSION),
        ({"usable_devices": 0}, Reason.NO_DEVICE),
    ],
)
def test_recipient_gates_drop_marketing(changes: dict[str, object], reason: Reason) -> None:
    recipient = replace(USER, **changes)  # type: ignore[arg-type]
    decision = decide(AD, recipient, [], RULES, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DROP, reason)
    assert decision.trace[-1] == GateStep(decision.trace[-1].check, False)
    assert all(step.passed for step in decision.trace[:-1])


def test_topic_opt_out() -> None:
    recipient = replace(USER, topic_opt_outs=frozenset({"football"}))
    assert outcome(replace(AD, topic_id="football"), recipient) == (
        Outcome.DROP,
        Reason.TOPIC_OPTED_OUT,
    )
    assert outcome(replace(AD, topic_id="tennis"), recipient) == (Outcome.ALLOW, None)


def test_duplicate_by_send_key() -> None:
    history = [
        ContactEntry(NOW - timedelta(days=2), "orders", MessageKind.TRANSACTIONAL, None, "order-42")
    ]
    assert outcome(RECEIPT, history=history) == (Outcome.DROP, Reason.DUPLICATE)
    assert outcome(replace(RECEIPT, send_key="order-43"), history=history) == (Outcome.ALLOW, None)


def test_expired_at_now() -> None:
    assert outcome(replace(AD, expires_at=NOW)) == (Outcome.DROP, Reason.EXPIRED)
    assert outcome(replace(AD, expires_at=NOW + timedelta(seconds=1))) == (Outcome.ALLOW, None)


def test_expired_because_the_deferral_lands_after_expiry() -> None:
    night = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    short = replace(AD, expires_at=night + timedelta(hours=2))
    decision = decide(short, USER, [], RULES, night)
    assert (decision.outcome, decision.reason) == (Outcome.DROP, Reason.EXPIRED)
    assert decision.until is None  # a DROP carries no instant; the trace shows the search
    (schedule,) = [s for s in decision.trace if isinstance(s, ScheduleStep)]
    assert schedule.hops[-1].to == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # 07:00 CET


def test_quiet_hours_defer_to_window_end_plus_jitter() -> None:
    night = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    decision = decide(AD, USER, [], RULES, night)
    end = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # 07:00 CET
    jitter = jitter_seconds("u1", "spring-sale", end, 1800)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.QUIET_HOURS)
    assert decision.until == end + timedelta(seconds=jitter)
    assert 0 <= jitter < 1800


def test_jitter_is_deterministic_and_spread() -> None:
    end = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    offsets = [jitter_seconds(f"user-{i}", "m", end, 1800) for i in range(2000)]
    assert offsets == [jitter_seconds(f"user-{i}", "m", end, 1800) for i in range(2000)]
    assert all(0 <= o < 1800 for o in offsets)
    # Spread: every 5-minute bucket of the 30 minutes gets a fair share.
    buckets = [sum(1 for o in offsets if b * 300 <= o < (b + 1) * 300) for b in range(6)]
    assert min(buckets) > 250
    assert jitter_seconds("u", "m", end, 0) == 0
    assert jitter_seconds("u", "m", end, 1800) != jitter_seconds("u", "m2", end, 1800) or (
        jitter_seconds("u", "m3", end, 1800) != jitter_seconds("u", "m", end, 1800)
    )


@pytest.mark.parametrize(
    ("message_id", "end"),
    [
        ("m", datetime(2026, 11, 24, 6, 0, tzinfo=UTC)),
        ("spring-sale", datetime(2026, 3, 29, 5, 0, tzinfo=UTC)),
    ],
)
def test_jitter_is_uniform_over_minutes(message_id: str, end: datetime) -> None:
    # 10,000 users deferred to one window end: each minute of the 30 gets its share ±20 %.
    offsets = (jitter_seconds(f"user-{i}", message_id, end, 1800) for i in range(10_000))
    minutes = Counter(offset // 60 for offset in offsets)
    assert sorted(minutes) == list(range(30))
    share = 10_000 / 30
    assert all(0.8 * share <= n <= 1.2 * share for n in minutes.values()), minutes


def test_jitter_depends_on_each_input() -> None:
    end = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    base = jitter_seconds("user-1", "m", end, 1800)
    # The same user and message over 1,000 window ends, and 1,000 messages: spread too.
    by_window = {jitter_seconds("user-1", "m", end + timedelta(days=d), 1800) for d in range(1000)}
    by_message = {jitter_seconds("user-1", f"m-{i}", end, 1800) for i in range(1000)}
    assert len(by_window) > 600
    assert len(by_message) > 600
    # Ids are hashed apart, so moving characters between them changes the instant.
    assert jitter_seconds("user-1m", "", end, 1800) != base or (
        jitter_seconds("user-", "1m", end, 1800) != base
    )


def test_capped_defer_and_drop() -> None:
    history = sends(1, 5, 20)
    decision = decide(AD, USER, history, RULES, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    assert decision.until == NOW + timedelta(hours=4)  # the send 20 h ago leaves the 24 h
    dropping = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24), CapAction.DROP),),
        quiet_hours=NIGHT,
        default_zone="Europe/Berlin",
    )
    assert outcome(history=history, rules=dropping) == (Outcome.DROP, Reason.CAPPED)


def test_capped_deferral_that_lands_in_quiet_hours_moves_to_morning() -> None:
    history = sends(1, 2, 14)  # the oldest leaves at 22:00Z = 23:00 CET, inside the night
    decision = decide(AD, USER, history, RULES, NOW)
    end = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    assert decision.until == end + timedelta(seconds=jitter_seconds("u1", "spring-sale", end, 1800))


def test_several_rules_defer_to_the_latest_freeing() -> None:
    rules = Rules(
        caps=(
            CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24)),
            CapRule(CapScope.CAMPAIGN, 1, timedelta(hours=48)),
            CapRule(CapScope.CATEGORY, 2, CalendarWindow.DAY),
        ),
        default_zone="Europe/Berlin",
    )
    history = sends(1, 30, campaign="camp-1")
    decision = decide(AD, USER, history, rules, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    assert decision.until == NOW + timedelta(hours=47)  # the campaign rule frees last


def test_category_and_campaign_targets_limit_only_their_own() -> None:
    rules = Rules(
        caps=(CapRule(CapScope.CATEGORY, 1, timedelta(hours=24), target_id="news"),),
        default_zone="Europe/Berlin",
    )
    news = replace(AD, category=Category("news", MessageKind.MARKETING))
    history = sends(1, category="news")
    assert outcome(news, history=history, rules=rules)[1] is Reason.CAPPED
    assert outcome(AD, history=history, rules=rules) == (Outcome.ALLOW, None)


def test_opt_down_only_tightens() -> None:
    loose = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 5, timedelta(hours=24)),), default_zone="UTC"
    )
    daily = replace(USER, frequency=FrequencyPreference.DAILY_MAX)  # app default: 1 a day
    history = sends(2)  # already one today (Berlin)
    assert outcome(history=history, rules=loose) == (Outcome.ALLOW, None)
    assert outcome(recipient=daily, history=history, rules=loose) == (
        Outcome.DEFER,
        Reason.FREQUENCY_PREFERENCE,
    )
    weekly = replace(USER, frequency=FrequencyPreference.WEEKLY_MAX)  # app default: 3 a week
    forever = replace(AD, expires_at=None)
    # Monday 03:00, 02:00 and 01:00 CET: three this ISO week use up the default.
    assert outcome(forever, weekly, sends(10), loose) == (Outcome.ALLOW, None)
    assert outcome(forever, weekly, sends(10, 11, 12), loose)[1] is Reason.FREQUENCY_PREFERENCE
    # A stricter app cap still wins over a user's looser wish, whatever the number.
    tight = Rules(caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(days=7)),), default_zone="UTC")
    fifty = replace(daily, frequency_max=50)
    assert outcome(forever, daily, sends(50), tight)[1] is Reason.CAPPED
    assert outcome(forever, fifty, sends(50), tight)[1] is Reason.CAPPED


def test_opt_down_takes_the_users_number() -> None:
    rules = Rules(default_zone="UTC")  # no app caps: only the user's own limit
    two_a_day = replace(USER, frequency=FrequencyPreference.DAILY_MAX, frequency_max=2)
    assert outcome(recipient=two_a_day, history=sends(2), rules=rules) == (Outcome.ALLOW, None)
    decision = decide(AD, two_a_day, sends(1, 2), rules, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.FREQUENCY_PREFERENCE)
    assert decision.until == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)  # Berlin midnight
    (cap,) = [s for s in decision.trace if isinstance(s, CapStep)]
    assert (cap.in_window, cap.limit, cap.passed) == (2, 2, False)
    assert cap.rule.user_preference
    assert cap.rule.name == OPT_DOWN_RULE
    assert cap.rule.window is CalendarWindow.DAY
    three_a_week = replace(USER, frequency=FrequencyPreference.WEEKLY_MAX, frequency_max=3)
    assert outcome(recipient=three_a_week, history=sends(1, 2), rules=rules)[0] is Outcome.ALLOW
    forever = replace(AD, expires_at=None)  # the ISO week ends after AD expires
    assert outcome(forever, three_a_week, sends(1, 2, 3), rules)[1] is Reason.FREQUENCY_PREFERENCE
    assert outcome(AD, three_a_week, sends(1, 2, 3), rules) == (Outcome.DROP, Reason.EXPIRED)
    # 0 takes the app's default for the mode, which the app may change.
    daily = replace(USER, frequency=FrequencyPreference.DAILY_MAX)
    generous = replace(rules, opt_down_daily_max=3)
    assert outcome(recipient=daily, history=sends(1, 2), rules=generous) == (Outcome.ALLOW, None)
    assert outcome(recipient=daily, history=sends(1, 2), rules=rules)[1] is (
        Reason.FREQUENCY_PREFERENCE
    )
    # The number means nothing outside DAILY_MAX / WEEKLY_MAX.
    normal = replace(USER, frequency_max=1)
    assert outcome(recipient=normal, history=sends(1, 2, 3), rules=rules) == (Outcome.ALLOW, None)
    assert rules.caps_for(FrequencyPreference.NORMAL, 1) == rules.caps
    # What an exceeding message gets is the app's choice for opt-down caps.
    dropping = replace(rules, preference_on_exceed=CapAction.DROP)
    assert outcome(recipient=two_a_day, history=sends(1, 2), rules=dropping) == (
        Outcome.DROP,
        Reason.FREQUENCY_PREFERENCE,
    )


def test_the_deciding_cap_names_the_reason() -> None:
    daily = replace(USER, frequency=FrequencyPreference.DAILY_MAX)  # 1 a day
    history = sends(2)  # 10:00Z today; Berlin's day ends at 23:00Z
    # The app's rule frees later (10:00Z tomorrow): it decides the deferral.
    day = Rules(caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=24)),), default_zone="UTC")
    assert outcome(recipient=daily, history=history, rules=day) == (Outcome.DEFER, Reason.CAPPED)
    # The opt-down frees later (23:00Z) than the app's rule (16:00Z): it decides.
    six = replace(day, caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=6)),))
    decision = decide(AD, daily, history, six, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.FREQUENCY_PREFERENCE)
    assert decision.until == datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    # A dropping app rule decides over a deferring opt-down.
    drop = replace(
        day, caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=6), CapAction.DROP),)
    )
    assert outcome(recipient=daily, history=history, rules=drop) == (Outcome.DROP, Reason.CAPPED)


def test_inputs_are_plain_values() -> None:
    """No derived or cached fields: ``asdict``, ``replace`` and equality see the inputs."""
    as_dict = dataclasses.asdict(RULES)
    assert as_dict["caps"][0]["limit"] == 3
    assert set(as_dict) == {f.name for f in dataclasses.fields(Rules)}
    assert [f.name for f in dataclasses.fields(QuietHours)] == ["windows"]
    assert "marketing_blocked" not in {f.name for f in dataclasses.fields(Recipient)}
    assert replace(AD, campaign_id=None, trigger_id="t-9").source_id == "t-9"
    assert QuietHours(NIGHT.windows) == NIGHT
    assert hash(QuietHours(NIGHT.windows)) == hash(NIGHT)


def test_opt_down_validation() -> None:
    with pytest.raises(ValueError, match="frequency_max"):
        Recipient("u1", frequency=FrequencyPreference.DAILY_MAX, frequency_max=-1)
    with pytest.raises(ValueError, match="opt-down defaults"):
        Rules(opt_down_weekly_max=0)
    with pytest.raises(ValueError, match="user_preference"):
        Rules(caps=(CapRule(CapScope.ALL_MARKETING, 1, CalendarWindow.DAY, user_preference=True),))


def test_digest_defers_to_the_users_slot_once_per_period() -> None:
    digest_user = replace(
        USER,
        frequency=FrequencyPreference.DIGEST,
        digest=DigestSlot(DigestPeriod.DAILY, time(18, 30)),
    )
    rules = replace(RULES, jitter=timedelta(0))
    decision = decide(AD, digest_user, [], rules, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.DIGEST)
    slot = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)  # 18:30 CET
    assert decision.until == slot
    assert decide(AD, digest_user, [], rules, slot).outcome is Outcome.ALLOW
    # Already one sent in this period: the next slot, tomorrow.
    after = decide(
        AD, digest_user, [ContactEntry(slot, "promo", MessageKind.MARKETING)], rules, slot
    )
    assert after.until == slot + timedelta(days=1)


def test_weekly_digest_slot() -> None:
    digest_user = replace(
        USER,
        frequency=FrequencyPreference.DIGEST,
        digest=DigestSlot(DigestPeriod.WEEKLY, time(9, 0), weekday=5),
    )
    forever = replace(AD, expires_at=None)
    decision = decide(forever, digest_user, [], replace(RULES, jitter=timedelta(0)), NOW)
    assert decision.until == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)  # Saturday 09:00 CET
    assert decide(AD, digest_user, [], RULES, NOW)[:3] == (Outcome.DROP, Reason.EXPIRED, None)


def test_transactional_exemptions_and_limits() -> None:
    everything_off = replace(
        USER,
        marketing_opt_out=True,
        push_consent=False,
        suppressed=True,
        holdout_sources=frozenset({"camp-1"}),
    )
    night = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert outcome(RECEIPT, everything_off, sends(1, 2, 3, 4), now=night) == (Outcome.ALLOW, None)
    assert outcome(RECEIPT, replace(USER, os_permission=False)) == (
        Outcome.DROP,
        Reason.NO_PERMISSION,
    )
    assert outcome(RECEIPT, replace(USER, usable_devices=0)) == (Outcome.DROP, Reason.NO_DEVICE)
    assert outcome(RECEIPT, replace(USER, erased=True)) == (Outcome.DROP, Reason.ERASED)
    opted = replace(USER, category_opt_outs=frozenset({"orders", "security"}))
    assert outcome(RECEIPT, opted) == (Outcome.DROP, Reason.CATEGORY_OPTED_OUT)
    alert = Message("login-alert", SECURITY)
    assert outcome(alert, opted) == (Outcome.ALLOW, None)  # this category refuses opt-out


def test_transactional_quiet_hours_only_when_opted_in() -> None:
    night = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    statement = Message("statement", ORDERS, respects_quiet_hours=True)
    decision = decide(statement, USER, [], RULES, night)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.QUIET_HOURS)
    assert outcome(RECEIPT, now=night) == (Outcome.ALLOW, None)


def test_transactional_counts_toward_a_rule_that_says_so() -> None:
    history = [
        ContactEntry(NOW - timedelta(hours=h), "orders", MessageKind.TRANSACTIONAL) for h in (1, 2)
    ]
    counting = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 2, timedelta(hours=24), count_transactional=True),),
        default_zone="UTC",
    )
    assert outcome(history=history, rules=counting)[1] is Reason.CAPPED
    assert outcome(history=history, rules=replace(RULES, quiet_hours=NIGHT)) == (
        Outcome.ALLOW,
        None,
    )


def test_zone_chain_profile_device_app_default() -> None:
    def zone_step(recipient: Recipient, rules: Rules = RULES) -> ZoneStep:
        decision = decide(AD, recipient, [], rules, NOW)
        return next(s for s in decision.trace if isinstance(s, ZoneStep))

    both = Recipient("u", zone="Asia/Tokyo", device_zone="America/Denver")
    assert zone_step(both)[2:] == (ZoneSource.PROFILE, "Asia/Tokyo")
    bad_profile = Recipient("u", zone="Mars/Olympus", device_zone="America/Denver")
    assert zone_step(bad_profile)[2:] == (ZoneSource.DEVICE, "America/Denver")
    nothing = Recipient("u")
    assert zone_step(nothing)[2:] == (ZoneSource.APP_DEFAULT, "Europe/Berlin")


def test_no_zone_anywhere_drops_marketing_but_not_transactional() -> None:
    no_default = replace(RULES, default_zone=None)
    assert outcome(AD, Recipient("u"), rules=no_default) == (Outcome.DROP, Reason.NO_TIMEZONE)
    statement = Message("statement", ORDERS, respects_quiet_hours=True)
    decision = decide(statement, Recipient("u"), [], no_default, NOW)
    assert decision.outcome is Outcome.ALLOW
    assert ZoneStep(Check.ZONE, False, ZoneSource.NONE, None) in decision.trace


def test_always_quiet_drops_instead_of_searching_forever() -> None:
    always = QuietHours(
        (QuietWindow(time(0), time(23, 59)), QuietWindow(time(23, 59), time(0, 30)))
    )
    always_quiet = replace(USER, quiet_hours=always)
    assert outcome(replace(AD, expires_at=None), always_quiet) == (Outcome.DROP, Reason.QUIET_HOURS)
    assert outcome(AD, always_quiet) == (Outcome.DROP, Reason.EXPIRED)


def test_naive_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(AD, USER, [], RULES, datetime(2026, 11, 23, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        ContactEntry(datetime(2026, 11, 23), "promo", MessageKind.MARKETING)


@pytest.mark.parametrize(
    "build",
    [
        lambda: QuietWindow(time(7), time(7)),
        lambda: QuietWindow(time(7), time(8), frozenset({7})),
        lambda: CapRule(CapScope.ALL_MARKETING, 0, timedelta(hours=1)),
        lambda: CapRule(CapScope.ALL_MARKETING, 1, timedelta(0)),
        lambda: CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=1), target_id="x"),
        lambda: Category("promo", MessageKind.MARKETING, opt_out_allowed=False),
        lambda: Rules(jitter=timedelta(milliseconds=500)),
        lambda: Rules(jitter=timedelta(seconds=90, microseconds=1)),
        lambda: Rules(digest_grace=timedelta(0)),
        lambda: DigestSlot(weekday=9),
    ],
)
def test_invalid_configuration_is_rejected(build: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by its builder
        build()  # type: ignore[operator]
