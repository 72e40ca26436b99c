"""Arbitration between pending messages for one user, and the remaining cap budget."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    ContactHistory,
    DigestSlot,
    FrequencyPreference,
    Message,
    MessageKind,
    Outcome,
    Reason,
    Recipient,
    Rules,
    arbitrate,
    arbitration_order,
    remaining_budget,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PROMO = Category("promo", MessageKind.MARKETING)
NEWS = Category("news", MessageKind.MARKETING)
ORDERS = Category("orders", MessageKind.TRANSACTIONAL)
USER = Recipient("u1", zone="Europe/Berlin")
TWO_A_DAY = Rules(
    caps=(CapRule(CapScope.ALL_MARKETING, 2, timedelta(hours=24)),), default_zone="Europe/Berlin"
)


def msg(mid: str, priority: int = 0, expires_in: float | None = None, **kw: object) -> Message:
    expires = None if expires_in is None else NOW + timedelta(hours=expires_in)
    return Message(mid, kw.pop("category", PROMO), priority=priority, expires_at=expires, **kw)  # type: ignore[arg-type]


def test_order_is_priority_then_expiry_then_stable_id() -> None:
    pending = [
        msg("c", priority=1),
        msg("b", priority=1, expires_in=5),
        msg("a", priority=1),
        msg("z", priority=3, expires_in=48),
        msg("y", priority=1, expires_in=2),
    ]
    assert [pending[i].message_id for i in arbitration_order(pending)] == ["z", "y", "b", "a", "c"]


def test_budget_goes_to_the_best_and_the_rest_wait_for_it_to_free() -> None:
    history = [ContactEntry(NOW - timedelta(hours=3), "promo", MessageKind.MARKETING)]
    pending = [msg("low"), msg("high", priority=5), msg("mid", priority=2)]
    results = arbitrate(pending, USER, history, TWO_A_DAY, NOW)
    assert [(r.message.message_id, r.decision.outcome) for r in results] == [
        ("high", Outcome.ALLOW),
        ("mid", Outcome.DEFER),
        ("low", Outcome.DEFER),
    ]
    # The one budget slot left is taken by "high"; the others wait until the send three
    # hours ago leaves the rolling 24 h.
    assert results[1].decision.until == NOW + timedelta(hours=21)
    assert results[1].decision.reason is Reason.CAPPED
    assert [r.rank for r in results] == [0, 1, 2]


def test_losers_are_dropped_where_the_rule_drops() -> None:
    rules = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 1, CalendarWindow.DAY, CapAction.DROP),),
        default_zone="Europe/Berlin",
    )
    results = arbitrate([msg("a", expires_in=1), msg("b", expires_in=3)], USER, [], rules, NOW)
    assert [(r.message.message_id, r.decision.outcome) for r in results] == [
        ("a", Outcome.ALLOW),
        ("b", Outcome.DROP),
    ]
    assert results[1].decision.reason is Reason.CAPPED


def test_losers_that_would_wait_past_expiry_are_dropped_as_expired() -> None:
    results = arbitrate(
        [msg("a", priority=1), msg("b", expires_in=4), msg("c")],
        USER,
        [ContactEntry(NOW - timedelta(hours=1), "promo", MessageKind.MARKETING)],
        TWO_A_DAY,
        NOW,
    )
    outcomes = {r.message.message_id: (r.decision.outcome, r.decision.reason) for r in results}
    assert outcomes == {
        "a": (Outcome.ALLOW, None),
        "b": (Outcome.DROP, Reason.EXPIRED),
        "c": (Outcome.DEFER, Reason.CAPPED),
    }


def test_transactional_does_not_use_the_marketing_budget() -> None:
    pending = [msg("receipt", priority=9, category=ORDERS), msg("a"), msg("b"), msg("c")]
    results = arbitrate(pending, USER, [], TWO_A_DAY, NOW)
    allowed = [r.message.message_id for r in results if r.decision.outcome is Outcome.ALLOW]
    assert allowed == ["receipt", "a", "b"]


def test_digest_user_gets_exactly_one() -> None:
    digest_user = Recipient(
        "u1",
        zone="Europe/Berlin",
        frequency=FrequencyPreference.DIGEST,
        digest=DigestSlot(at=time(12, 30)),
    )
    results = arbitrate(
        [msg("a"), msg("b", priority=1), msg("c")],
        digest_user,
        [],
        Rules(default_zone="Europe/Berlin"),
        NOW,  # 13:00 CET: the 12:30 slot is open
    )
    assert [(r.message.message_id, r.decision.outcome) for r in results] == [
        ("b", Outcome.ALLOW),
        ("a", Outcome.DEFER),
        ("c", Outcome.DEFER),
    ]
    assert results[1].decision.reason is Reason.DIGEST


def test_remaining_budget() -> None:
    rules = Rules(
        caps=(
            CapRule(CapScope.ALL_MARKETING, 3, timedelta(hours=24)),
            CapRule(CapScope.CATEGORY, 1, CalendarWindow.DAY, target_id="news"),
        ),
        default_zone="Europe/Berlin",
    )
    history = ContactHistory(
        [ContactEntry(NOW - timedelta(hours=1), "promo", MessageKind.MARKETING)]
    )
    budget = remaining_budget(msg("a"), USER, history, rules, NOW)
    assert (budget.remaining, budget.binding_rule) == (2, rules.caps[0])
    news = remaining_budget(msg("n", category=NEWS), USER, history, rules, NOW)
    assert (news.remaining, news.binding_rule) == (1, rules.caps[1])
    assert len(news.steps) == 2
    daily = Recipient("u1", zone="Europe/Berlin", frequency=FrequencyPreference.DAILY_MAX)
    assert remaining_budget(msg("a"), daily, history, rules, NOW).remaining == 0
    two_a_day = Recipient(
        "u1", zone="Europe/Berlin", frequency=FrequencyPreference.DAILY_MAX, frequency_max=2
    )
    budget = remaining_budget(msg("a"), two_a_day, history, rules, NOW)
    assert budget.remaining == 1
    assert budget.binding_rule is not None
    assert budget.binding_rule.user_preference
    receipt = remaining_budget(msg("r", category=ORDERS), USER, history, rules, NOW)
    assert receipt.remaining is None
    unbounded = remaining_budget(msg("a"), USER, history, Rules(default_zone="UTC"), NOW)
    assert unbounded.remaining is None
    lost = remaining_budget(
        msg("n", category=NEWS), Recipient("x"), history, Rules(caps=rules.caps), NOW
    )
    assert lost.remaining == 0  # no zone: a calendar rule cannot be evaluated
