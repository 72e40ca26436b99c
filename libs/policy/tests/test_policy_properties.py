"""Property-based tests of the policy's invariants.

Zones come from the whole IANA set, ``now`` is often drawn within a day and a half of one
of the zone's DST transitions, quiet windows cross midnight and vary by weekday, and
several cap rules (rolling and calendar, DROP and DEFER, every scope) apply at once.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import event, given
from hypothesis import strategies as st

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    CapStep,
    Category,
    ContactEntry,
    ContactHistory,
    Decision,
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
    clock,
    decide,
    engine,
    reference,
    zones,
)
from pushwarden.policy.caps import evaluate_cap
from pushwarden.policy.clock import quiet_window_at
from pushwarden.policy.memo import clear_all

ZONES = sorted(available_timezones())
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)

MARKETING_CATEGORIES = [Category(f"promo-{i}", MessageKind.MARKETING) for i in range(3)]
TRANSACTIONAL_CATEGORIES = [
    Category("orders", MessageKind.TRANSACTIONAL),
    Category("security", MessageKind.TRANSACTIONAL, opt_out_allowed=False),
]
CATEGORIES = MARKETING_CATEGORIES + TRANSACTIONAL_CATEGORIES
CAMPAIGNS = ["camp-a", "camp-b", "camp-c"]


@cache
def transitions(name: str) -> tuple[datetime, ...]:
    """UTC instants in 2026 at which ``name`` changes its offset (to the minute)."""
    zone = ZoneInfo(name)
    found = []
    day = YEAR_START
    before = day.astimezone(zone).utcoffset()
    for _ in range(366):
        nxt = day + timedelta(days=1)
        after = nxt.astimezone(zone).utcoffset()
        if after != before:
            lo, hi = day, nxt
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if mid.astimezone(zone).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        day, before = nxt, after
    return tuple(found)


zone_names = st.sampled_from(ZONES)


@st.composite
def instants_for(draw: st.DrawFn, zone: str) -> datetime:
    """A minute in 2026, near one of the zone's transitions half of the time."""
    near = transitions(zone)
    if len(near) > 0 and draw(st.booleans()):
        anchor = draw(st.sampled_from(near))
        return anchor + timedelta(minutes=draw(st.integers(-36 * 60, 36 * 60)))
    return YEAR_START + timedelta(minutes=draw(st.integers(0, 364 * 24 * 60)))


wall_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45, 7, 59]))


@st.composite
def quiet_windows(draw: st.DrawFn) -> QuietWindow:
    start = draw(wall_times)
    end = draw(wall_times.filter(lambda t: t != start))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1, max_size=7))
    return QuietWindow(start, end, days)


quiet_hours = st.builds(QuietHours, st.lists(quiet_windows(), max_size=3).map(tuple))
night_first = st.one_of(
    st.just(QuietHours((QuietWindow(time(22), time(7)),))), quiet_hours
)  # a common real configuration, plus anything

rolling = st.sampled_from(
    [timedelta(hours=1), timedelta(hours=6), timedelta(hours=24), timedelta(days=7)]
) | st.integers(10, 3 * 24 * 60).map(lambda m: timedelta(minutes=m))
windows = st.one_of(rolling, st.sampled_from(list(CalendarWindow)))


@st.composite
def cap_rules(draw: st.DrawFn) -> CapRule:
    scope = draw(st.sampled_from(list(CapScope)))
    target = None
    if scope is CapScope.CATEGORY:
        target = draw(st.none() | st.sampled_from([c.category_id for c in MARKETING_CATEGORIES]))
    elif scope is CapScope.CAMPAIGN:
        target = draw(st.none() | st.sampled_from(CAMPAIGNS))
    return CapRule(
        scope=scope,
        limit=draw(st.integers(1, 4)),
        window=draw(windows),
        on_exceed=draw(st.sampled_from(list(CapAction))),
        target_id=target,
        count_transactional=scope is CapScope.ALL_MARKETING and draw(st.booleans()),
    )


@st.composite
def rules_for(draw: st.DrawFn, zone: str) -> Rules:
    return Rules(
        caps=tuple(draw(st.lists(cap_rules(), min_size=1, max_size=4))),
        quiet_hours=draw(night_first),
        jitter=timedelta(minutes=draw(st.sampled_from([0, 1, 30, 45]))),
        default_zone=zone,
        preference_on_exceed=draw(st.sampled_from(list(CapAction))),
        opt_down_daily_max=draw(st.integers(1, 3)),
        opt_down_weekly_max=draw(st.integers(1, 5)),
        default_digest=DigestSlot(
            draw(st.sampled_from(list(DigestPeriod))), draw(wall_times), draw(st.integers(0, 6))
        ),
    )


@st.composite
def messages(draw: st.DrawFn, now: datetime, kind: MessageKind | None = None) -> Message:
    pool = CATEGORIES
    if kind is MessageKind.MARKETING:
        pool = MARKETING_CATEGORIES
    elif kind is MessageKind.TRANSACTIONAL:
        pool = TRANSACTIONAL_CATEGORIES
    category = draw(st.sampled_from(pool))
    expiry = draw(st.none() | st.integers(1, 14 * 24 * 60))
    return Message(
        message_id=draw(st.sampled_from(["m1", "m2", "m3"])),
        category=category,
        campaign_id=draw(st.none() | st.sampled_from(CAMPAIGNS)),
        # Trigger ids that equal campaign ids: the two are keyed apart.
        trigger_id=draw(st.none() | st.sampled_from(["camp-a", "trig-1"])),
        topic_id=draw(st.none() | st.sampled_from(["t1", "t2"])),
        priority=draw(st.integers(0, 3)),
        expires_at=None if expiry is None else now + timedelta(minutes=expiry),
        respects_quiet_hours=draw(st.booleans()),
        send_key=draw(st.none() | st.sampled_from(["k1", "k2"])),
    )


@st.composite
def recipients(draw: st.DrawFn, zone: str, *, reachable: bool = False) -> Recipient:
    flag = st.just(False) if reachable else st.booleans()
    frequency = draw(st.sampled_from(list(FrequencyPreference)))
    return Recipient(
        user_id=draw(st.sampled_from(["u1", "u2", "u3"])),
        push_consent=not draw(flag),
        marketing_opt_out=draw(flag),
        category_opt_outs=frozenset()
        if reachable
        else draw(st.frozensets(st.sampled_from([c.category_id for c in CATEGORIES]), max_size=2)),
        topic_opt_outs=frozenset() if reachable else draw(st.frozensets(st.just("t1"))),
        os_permission=not draw(flag),
        usable_devices=1 if reachable else draw(st.integers(0, 2)),
        zone=zone,
        quiet_hours=draw(st.none() | quiet_hours),
        frequency=frequency,
        frequency_max=draw(st.integers(0, 4)),
        digest=draw(
            st.none() | st.builds(DigestSlot, st.sampled_from(list(DigestPeriod)), wall_times)
        ),
        suppressed=draw(flag),
        erased=draw(flag),
        holdout_sources=frozenset()
        if reachable
        else draw(st.frozensets(st.sampled_from(CAMPAIGNS))),
    )


@st.composite
def histories(draw: st.DrawFn, now: datetime) -> list[ContactEntry]:
    entries = []
    for _ in range(draw(st.integers(0, 12))):
        category = draw(st.sampled_from(CATEGORIES))
        entries.append(
            ContactEntry(
                at=now - timedelta(minutes=draw(st.integers(0, 10 * 24 * 60))),
                category_id=category.category_id,
                # Now and then a kind that contradicts the category's: it counts as sent.
                kind=draw(st.sampled_from([category.kind] * 3 + list(MessageKind))),
                campaign_id=draw(st.none() | st.sampled_from(CAMPAIGNS)),
                send_key=draw(st.none() | st.sampled_from(["k1", "k9"])),
                trigger_id=draw(st.none() | st.sampled_from(["camp-a", "trig-1"])),
            )
        )
    return entries


@st.composite
def scenarios(
    draw: st.DrawFn, kind: MessageKind | None = None, reachable: bool = False
) -> tuple[Message, Recipient, list[ContactEntry], Rules, datetime]:
    zone = draw(zone_names)
    now = draw(instants_for(zone))
    return (
        draw(messages(now, kind)),
        draw(recipients(zone, reachable=reachable)),
        draw(histories(now)),
        draw(rules_for(zone)),
        now,
    )


# 1. No ALLOW for marketing after an opt-out of marketing, of the channel or the category.


@given(scenarios(MessageKind.MARKETING), st.sampled_from(["marketing", "channel", "category"]))
def test_opted_out_marketing_is_never_allowed(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime], how: str
) -> None:
    message, recipient, history, rules, now = scenario
    if how == "marketing":
        recipient = replace(recipient, marketing_opt_out=True)
    elif how == "channel":
        recipient = replace(recipient, push_consent=False)
    else:
        recipient = replace(recipient, category_opt_outs=frozenset({message.category.category_id}))
    decision = decide(message, recipient, history, rules, now)
    assert decision.outcome is Outcome.DROP
    assert decision.reason in {
        Reason.OPTED_OUT,
        Reason.CATEGORY_OPTED_OUT,
        Reason.ERASED,
        Reason.SUPPRESSED,
        Reason.HOLDOUT,
        Reason.DUPLICATE,
        Reason.EXPIRED,
    }


# 2. Feeding every ALLOW back into the history, no window of any cap rule exceeds its max.


def _window_violations(
    rule: CapRule, sent: list[ContactEntry], zone: ZoneInfo
) -> list[tuple[datetime, int]]:
    """Windows of ``rule`` holding more than its limit, checked at every marketing send.

    Independent of the library: groups by scope with plain Python and computes calendar
    periods from local dates. ``sent`` is in send order; a window is checked with the sends
    made up to and including each marketing send (transactional sends are counted by some
    rules but never capped, so they may fill a window after it).
    """
    bad = []
    for index, entry in enumerate(sent):
        if entry.kind is not MessageKind.MARKETING or not _counts(rule, entry, entry):
            continue
        before = [e for e in sent[: index + 1] if _counts(rule, e, entry)]
        held = sum(1 for e in before if _same_window(rule, e.at, entry.at, zone))
        if held > rule.limit:
            bad.append((entry.at, held))
    return bad


def _counts(rule: CapRule, entry: ContactEntry, new: ContactEntry) -> bool:
    """Whether ``rule`` counts ``entry`` against a send like ``new``."""
    if entry.kind is not MessageKind.MARKETING and not rule.count_transactional:
        return False
    if rule.scope is CapScope.ALL_MARKETING:
        return True
    # CATEGORY by category id; CAMPAIGN by campaign id only (triggers are keyed apart).
    attribute = "category_id" if rule.scope is CapScope.CATEGORY else "campaign_id"
    key, new_key = getattr(entry, attribute), getattr(new, attribute)
    if new_key is None or key != new_key:
        return False
    return rule.target_id is None or key == rule.target_id


def _same_window(rule: CapRule, at: datetime, end: datetime, zone: ZoneInfo) -> bool:
    if isinstance(rule.window, timedelta):
        return end - rule.window < at <= end
    a, b = at.astimezone(zone).date(), end.astimezone(zone).date()
    if rule.window is CalendarWindow.WEEK:
        a -= timedelta(days=a.weekday())
        b -= timedelta(days=b.weekday())
    return a == b and at <= end


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, Rules, Recipient, datetime, list[tuple[int, Message]]]:
    zone = draw(zone_names)
    start = draw(instants_for(zone))
    rules = Rules(
        caps=tuple(draw(st.lists(cap_rules(), min_size=2, max_size=4))),
        quiet_hours=draw(night_first),
        jitter=timedelta(minutes=draw(st.sampled_from([0, 30]))),
        default_zone=zone,
        preference_on_exceed=draw(st.sampled_from(list(CapAction))),
        opt_down_daily_max=draw(st.integers(1, 3)),
        opt_down_weekly_max=draw(st.integers(1, 5)),
    )
    recipient = Recipient(
        "u1",
        zone=zone,
        frequency=draw(st.sampled_from(list(FrequencyPreference))),
        frequency_max=draw(st.integers(0, 4)),
        digest=draw(
            st.none() | st.builds(DigestSlot, st.sampled_from(list(DigestPeriod)), wall_times)
        ),
    )
    arrivals = draw(
        st.lists(st.tuples(st.integers(0, 7 * 24 * 60), messages(start)), min_size=10, max_size=40)
    )
    return zone, rules, recipient, start, arrivals


@given(streams())
def test_caps_hold_over_simulated_weeks(
    stream: tuple[str, Rules, Recipient, datetime, list[tuple[int, Message]]],
) -> None:
    zone_name, rules, recipient, start, arrivals = stream
    zone = ZoneInfo(zone_name)
    # A tiny scheduler: every DEFER comes back at its instant, as the real one would.
    queue = [(start + timedelta(minutes=m), i, msg) for i, (m, msg) in enumerate(arrivals)]
    heapq.heapify(queue)
    counter = itertools.count(len(queue))
    sent: list[ContactEntry] = []
    decisions = 0
    while queue and decisions < 300:
        now, _, message = heapq.heappop(queue)
        decision = decide(message, recipient, sent, rules, now)
        decisions += 1
        if decision.outcome is Outcome.ALLOW:
            sent.append(
                ContactEntry(
                    now,
                    message.category.category_id,
                    message.category.kind,
                    message.campaign_id,
                    # Each arrival is its own send; keys would turn repeats into DUPLICATE.
                    None,
                    message.trigger_id,
                )
            )
        elif decision.outcome is Outcome.DEFER:
            assert decision.until is not None
            assert decision.until > now
            heapq.heappush(queue, (decision.until, next(counter), message))
    event(f"sent {min(len(sent) // 5 * 5, 20)}+ of {decisions} decisions")
    for rule in rules.caps_for(recipient.frequency, recipient.frequency_max):
        assert _window_violations(rule, sent, zone) == [], rule
    if recipient.frequency is FrequencyPreference.DIGEST:
        digest = recipient.digest or rules.default_digest
        periods = [
            clock.digest_period(digest, zone, e.at)[1]
            for e in sent
            if e.kind is MessageKind.MARKETING
        ]
        assert len(periods) == len(set(periods)), "two marketing sends in one digest period"


# 3. DEFER is later than now, outside quiet hours in the user's zone, and allowed then.


@given(scenarios(reachable=True))
def test_defer_instant_is_later_quiet_free_and_allowed(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    decision = decide(message, recipient, history, rules, now)
    event(f"{decision.outcome.value} {decision.reason.value if decision.reason else ''}")
    if decision.outcome is not Outcome.DEFER:
        return
    until = decision.until
    assert until is not None
    assert until > now
    zone = ZoneInfo(recipient.zone or "UTC")
    quiet = recipient.quiet_hours if recipient.quiet_hours is not None else rules.quiet_hours
    assert quiet_window_at(quiet, zone, until, until.astimezone(zone).toordinal()) is None
    assert not _in_quiet_by_wall_clock(quiet, zone, until)
    later = decide(message, recipient, history, rules, until)
    assert later.outcome is Outcome.ALLOW, later.reason


def _in_quiet_by_wall_clock(quiet: QuietHours, zone: ZoneInfo, at: datetime) -> bool:
    """An oracle that reads the local wall clock, used only away from DST transitions."""
    if any(abs(at - t) < timedelta(days=1, hours=2) for t in transitions(zone.key)):
        return False  # edges near a transition follow the gap/fold rules, tested by table
    local = at.astimezone(zone)
    wall, weekday = local.time().replace(tzinfo=None), local.weekday()
    for window in quiet.windows:
        if window.crosses_midnight:
            if (weekday in window.weekdays and wall >= window.start) or (
                (weekday - 1) % 7 in window.weekdays and wall < window.end
            ):
                return True
        elif weekday in window.weekdays and window.start <= wall < window.end:
            return True
    return False


# 4. A transactional message is never CAPPED, and never QUIET_HOURS unless it opted in.


@given(scenarios(MessageKind.TRANSACTIONAL))
def test_transactional_is_never_capped(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    decision = decide(message, recipient, history, rules, now)
    assert decision.reason is not Reason.CAPPED
    assert decision.reason is not Reason.FREQUENCY_PREFERENCE
    assert decision.reason is not Reason.DIGEST
    if not message.respects_quiet_hours:
        assert decision.reason is not Reason.QUIET_HOURS
        assert decision.outcome is not Outcome.DEFER


@given(scenarios(MessageKind.TRANSACTIONAL, reachable=True))
def test_transactional_skips_marketing_opt_out_and_caps(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    message = replace(message, send_key=None, respects_quiet_hours=False)
    recipient = replace(recipient, marketing_opt_out=True, push_consent=False)
    stuffed = history + [
        ContactEntry(now - timedelta(minutes=i), "promo-0", MessageKind.MARKETING) for i in range(8)
    ]
    decision = decide(message, recipient, stuffed, rules, now)
    assert decision.outcome is Outcome.ALLOW


# 5. The same inputs always give the same decision.


@given(scenarios())
def test_same_inputs_same_decision(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    first = decide(message, recipient, history, rules, now)
    clear_all()
    fresh_quiet = (
        None if recipient.quiet_hours is None else QuietHours(recipient.quiet_hours.windows)
    )
    fresh = replace(recipient, quiet_hours=fresh_quiet)
    # The app's quiet hours rebuilt too, so their memos start empty as well.
    fresh_rules = replace(rules, quiet_hours=QuietHours(rules.quiet_hours.windows))
    again = decide(message, fresh, ContactHistory(reversed(history)), fresh_rules, now)
    in_berlin = decide(
        message, recipient, history, rules, now.astimezone(ZoneInfo("Europe/Berlin"))
    )
    assert first == again == in_berlin
    assert _same_trace(first, again)


def _same_trace(a: Decision, b: Decision) -> bool:
    return [type(s) for s in a.trace] == [type(s) for s in b.trace] and a.trace == b.trace


# The fast path (``decide``) and the reference evaluator (``reference.evaluate``) agree.


@given(scenarios())
def test_decide_agrees_with_the_reference_evaluator(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    hist = ContactHistory(history)
    decision = decide(message, recipient, hist, rules, now)
    outcome, reason, until, steps = reference.evaluate(message, recipient, hist, rules, now)
    assert (decision.outcome, decision.reason, decision.until) == (outcome, reason, until)
    assert decision.trace == steps
    assert decision.trace.expanded
    event(f"{outcome.value} {reason.value if reason else ''}")


@given(scenarios(MessageKind.MARKETING, reachable=True))
def test_decide_agrees_on_reachable_marketing(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    """The same, where the timed part (caps, quiet hours, digest, deferral) always runs."""
    message, recipient, history, rules, now = scenario
    hist = ContactHistory(history)
    decision = decide(message, recipient, hist, rules, now)
    outcome, reason, until, steps = reference.evaluate(message, recipient, hist, rules, now)
    assert (decision.outcome, decision.reason, decision.until) == (outcome, reason, until)
    assert tuple(decision.trace) == steps


@given(scenarios())
def test_fast_gate_check_matches_gate_table(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    hist = ContactHistory(history)
    marketing = message.category.kind is MessageKind.MARKETING
    table = reference.MARKETING_GATES if marketing else reference.TRANSACTIONAL_GATES
    failing = [reason for _, reason, blocked in table if blocked(message, recipient, hist, now)]
    spelled = engine._marketing_gate if marketing else engine._transactional_gate
    index = spelled(message, recipient, hist, now)
    assert index == reference.first_failure(table, message, recipient, hist, now)
    decision = decide(message, recipient, hist, rules, now)
    if failing:
        assert (decision.outcome, decision.reason) == (Outcome.DROP, failing[0])
    else:
        # Past every gate (an EXPIRED may still come from the deferral search).
        gates = [step for step in decision.trace if isinstance(step, GateStep)]
        assert len(gates) >= len(table)
        assert all(step.passed for step in gates)


# A user's opt-down only ever tightens: whatever its mode and number.


@given(
    scenarios(MessageKind.MARKETING, reachable=True),
    st.sampled_from([FrequencyPreference.DAILY_MAX, FrequencyPreference.WEEKLY_MAX]),
    st.integers(0, 4),
)
def test_opt_down_never_loosens(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
    mode: FrequencyPreference,
    count: int,
) -> None:
    message, recipient, history, rules, now = scenario
    normal = replace(recipient, frequency=FrequencyPreference.NORMAL)
    opted = replace(recipient, frequency=mode, frequency_max=count)
    base = decide(message, normal, history, rules, now)
    tight = decide(message, opted, history, rules, now)
    if tight.outcome is Outcome.ALLOW:
        assert base.outcome is Outcome.ALLOW
    if (base.outcome, base.reason) == (Outcome.DROP, Reason.CAPPED):
        # A full dropping app rule stays full. (Deferral instants are not compared: a
        # later start can miss a jittered window end, which is fine for either.)
        assert tight.outcome is Outcome.DROP
    if tight.reason is Reason.FREQUENCY_PREFERENCE:
        failed = [s for s in tight.trace if isinstance(s, CapStep) and not s.passed]
        assert any(s.rule.user_preference for s in failed)
        limit = count or (
            rules.opt_down_daily_max
            if mode is FrequencyPreference.DAILY_MAX
            else rules.opt_down_weekly_max
        )
        assert [s.limit for s in failed if s.rule.user_preference] == [limit]
    event(f"{base.outcome.value}/{base.reason} -> {tight.outcome.value}/{tight.reason}")


@given(zone_names.flatmap(lambda name: st.tuples(st.just(name), instants_for(name))), wall_times)
def test_localize_lands_on_the_wall_time_or_after_the_gap(
    drawn: tuple[str, datetime], wall: time
) -> None:
    name, at = drawn
    zone = ZoneInfo(name)
    day = at.astimezone(zone).date()
    instant = zones.localize(zone, day, wall)
    local = instant.astimezone(zone)
    naive = datetime.combine(day, wall)
    if local.replace(tzinfo=None) != naive:
        # Only a wall time inside a gap may move, and then to the instant the gap ends:
        # a second earlier the clock still showed a time before ``wall``.
        just_before = (instant - timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None)
        assert just_before < naive < local.replace(tzinfo=None)
    else:
        # A repeated wall time gives its first occurrence: an hour or less earlier the
        # clock never showed the same time.
        assert instant == naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
        for minutes in range(1, 121, 7):
            earlier = (instant - timedelta(minutes=minutes)).astimezone(zone)
            assert earlier.replace(tzinfo=None) != naive


@given(zone_names.flatmap(lambda name: st.tuples(st.just(name), instants_for(name))))
def test_memoised_local_date_matches_conversion(drawn: tuple[str, datetime]) -> None:
    name, at = drawn
    zone = ZoneInfo(name)
    for offset in (timedelta(0), timedelta(minutes=7), timedelta(minutes=14, seconds=59)):
        instant = at + offset
        assert zones.local_ordinal(zone, instant) == instant.astimezone(zone).toordinal()


@given(scenarios(MessageKind.MARKETING, reachable=True))
def test_inlined_cap_evaluation_matches_evaluate_cap(
    scenario: tuple[Message, Recipient, list[ContactEntry], Rules, datetime],
) -> None:
    message, recipient, history, rules, now = scenario
    hist = ContactHistory(history)
    decision = decide(message, recipient, hist, rules, now)
    zone = ZoneInfo(recipient.zone or "UTC")
    ordinal = now.astimezone(zone).toordinal()
    for step in decision.trace:
        if isinstance(step, CapStep):
            times = hist.times_for(step.rule, message)
            assert step == evaluate_cap(step.rule, times, now, zone, ordinal)
