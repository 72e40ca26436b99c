"""Wrong answers an independent check found, each pinned by the example that showed it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    ContactHistory,
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
    remaining_budget,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday, 13:00 in Berlin
PROMO = Category("promo", MessageKind.MARKETING)
USER = Recipient("u1", zone="Europe/Berlin")
MK, TX = MessageKind.MARKETING, MessageKind.TRANSACTIONAL


# Transactional sends are counted by scoped caps only when the rule says so.

PER_CAMPAIGN = CapRule(CapScope.CAMPAIGN, 1, CalendarWindow.DAY, CapAction.DEFER)
PER_CATEGORY = CapRule(CapScope.CATEGORY, 1, timedelta(hours=24), CapAction.DROP)


@pytest.mark.parametrize("rule", [PER_CAMPAIGN, PER_CATEGORY], ids=["campaign", "category"])
def test_a_transactional_send_does_not_fill_a_scoped_cap(rule: CapRule) -> None:
    # The example: one transactional send an hour ago that carried campaign c1
    # (and, for the category rule, the promotion's category id).
    sent = ContactEntry(NOW - timedelta(hours=1), "promo", TX, "c1")
    rules = Rules(caps=(rule,), default_zone="UTC")
    ad = Message("ad", PROMO, campaign_id="c1")
    decision = decide(ad, USER, [sent], rules, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.ALLOW, None)
    assert remaining_budget(ad, USER, [sent], rules, NOW).remaining == 1
    # A marketing send in the same place does fill it.
    marketing = ContactEntry(NOW - timedelta(hours=1), "promo", MK, "c1")
    assert decide(ad, USER, [marketing], rules, NOW).reason is Reason.CAPPED


@pytest.mark.parametrize("scope", [CapScope.CAMPAIGN, CapScope.CATEGORY])
def test_count_transactional_counts_them_in_every_scope(scope: CapScope) -> None:
    rule = CapRule(scope, 1, timedelta(hours=24), count_transactional=True)
    sent = ContactEntry(NOW - timedelta(hours=1), "promo", TX, "c1")
    ad = Message("ad", PROMO, campaign_id="c1")
    rules = Rules(caps=(rule,), default_zone="UTC")
    decision = decide(ad, USER, [sent], rules, NOW)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
    assert decision.until == NOW + timedelta(hours=23)


def test_an_entry_counts_as_the_kind_it_was_sent_as() -> None:
    """A marketing entry in a transactional category counts; a transactional one in a
    marketing category does not (the entry's kind is what was sent)."""
    rules = Rules(caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=24)),))
    ad = Message("ad", PROMO)
    odd_marketing = ContactEntry(NOW - timedelta(hours=1), "orders", MK)
    odd_transactional = ContactEntry(NOW - timedelta(hours=1), "promo", TX)
    berlin = Recipient("u1", zone="Europe/Berlin")
    assert decide(ad, berlin, [odd_marketing], rules, NOW).reason is Reason.CAPPED
    assert decide(ad, berlin, [odd_transactional], rules, NOW).outcome is Outcome.ALLOW
    history = ContactHistory([odd_marketing, odd_transactional])
    assert history.category_times("promo") == ()
    assert history.category_times("promo", transactional=True) == (odd_transactional.at,)


def test_a_trigger_is_keyed_apart_from_campaigns() -> None:
    """CAMPAIGN caps are keyed by campaign id (the contract's CAP_SCOPE_CAMPAIGN): a
    trigger-only message is not capped by a campaign's sends that share its id, nor by
    CAMPAIGN rules at all; its own sends count under ALL_MARKETING like any other."""
    per_campaign = Rules(
        caps=(CapRule(CapScope.CAMPAIGN, 1, timedelta(hours=24)),), default_zone="UTC"
    )
    cart = Message("cart", PROMO, trigger_id="x")
    campaign_x = ContactEntry(NOW - timedelta(hours=1), "promo", MK, campaign_id="x")
    trigger_x = ContactEntry(NOW - timedelta(hours=1), "promo", MK, trigger_id="x")
    assert decide(cart, USER, [campaign_x], per_campaign, NOW).outcome is Outcome.ALLOW
    assert decide(cart, USER, [trigger_x], per_campaign, NOW).outcome is Outcome.ALLOW
    campaign = Message("news", PROMO, campaign_id="x")
    assert decide(campaign, USER, [trigger_x], per_campaign, NOW).outcome is Outcome.ALLOW
    assert decide(campaign, USER, [campaign_x], per_campaign, NOW).reason is Reason.CAPPED
    everything = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=24)),), default_zone="UTC"
    )
    assert decide(cart, USER, [trigger_x], everything, NOW).reason is Reason.CAPPED


# A deferral lands in [earliest allowed instant, + jitter) and inside an allowed stretch.

SHORT_GAP = QuietHours((QuietWindow(time(22), time(7)), QuietWindow(time(7, 15), time(9))))


def test_jitter_never_jumps_over_a_short_allowed_gap() -> None:
    """The issue's example: 23:00 in Berlin, windows 22:00-07:00 and 07:15-09:00, the
    default 30-minute jitter: every user goes between 07:00 and 07:15, not after 09:00."""
    rules = Rules(quiet_hours=SHORT_GAP, default_zone="Europe/Berlin")
    at_23 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    seven = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    landed = []
    for index in range(500):
        user = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("ad", PROMO), user, [], rules, at_23)
        assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.QUIET_HOURS)
        assert decision.until is not None
        assert seven <= decision.until < seven + timedelta(minutes=15)
        assert len(decision.trace) > 0  # the reference evaluator reaches the same instant
        landed.append((decision.until - seven) // timedelta(minutes=1))
    assert set(landed) == set(range(15))  # spread over the whole gap


def test_a_short_gap_before_expiry_sends_instead_of_dropping() -> None:
    rules = Rules(quiet_hours=SHORT_GAP, default_zone="Europe/Berlin")
    at_23 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    seven = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    # Expires at 07:20: inside the second window; 07:00-07:15 is still free.
    short = Message("ad", PROMO, expires_at=seven + timedelta(minutes=20))
    # Expires at 07:05: the spread is cut to the five minutes before it.
    shorter = Message("ad", PROMO, expires_at=seven + timedelta(minutes=5))
    for index in range(200):
        user = Recipient(f"user-{index}", zone="Europe/Berlin")
        for message, limit in ((short, 15), (shorter, 5)):
            decision = decide(message, user, [], rules, at_23)
            assert decision.outcome is Outcome.DEFER, decision.reason
            assert decision.until is not None
            assert seven <= decision.until < seven + timedelta(minutes=limit)
            assert len(decision.trace) > 0


def test_a_capped_deferral_into_the_night_is_cut_to_the_gap_too() -> None:
    rules = Rules(
        caps=(CapRule(CapScope.ALL_MARKETING, 1, timedelta(hours=24)),),
        quiet_hours=SHORT_GAP,
        default_zone="Europe/Berlin",
    )
    # The cap frees at 02:00 Berlin time, inside the night.
    sent = ContactEntry(datetime(2026, 11, 23, 1, 0, tzinfo=UTC), "promo", MK)
    noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    seven = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    for index in range(100):
        user = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("ad", PROMO), user, [sent], rules, noon)
        assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.CAPPED)
        assert decision.until is not None
        assert seven <= decision.until < seven + timedelta(minutes=15)


def test_a_drop_carries_no_until() -> None:
    rules = Rules(quiet_hours=SHORT_GAP, default_zone="Europe/Berlin")
    at_23 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    gone = Message("ad", PROMO, expires_at=at_23 + timedelta(hours=1))
    decision = decide(gone, USER, [], rules, at_23)
    assert decision[:3] == (Outcome.DROP, Reason.EXPIRED, None)


def test_a_long_jitter_needs_no_digest_grace_and_a_digest_spread_stays_in_its_slot() -> None:
    rules = Rules(
        quiet_hours=QuietHours((QuietWindow(time(22), time(7)),)),
        jitter=timedelta(hours=4),
        default_zone="Europe/Berlin",
    )
    assert rules.digest_grace == timedelta(hours=2)
    at_23 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    seven = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)
    digest = Recipient("d", zone="Europe/Berlin", frequency=FrequencyPreference.DIGEST)
    slot = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # the default 09:00 slot
    spread = set()
    for index in range(200):
        user = Recipient(f"user-{index}", zone="Europe/Berlin")
        decision = decide(Message("ad", PROMO), user, [], rules, at_23)
        assert decision.until is not None
        assert seven <= decision.until < seven + timedelta(hours=4)
        spread.add((decision.until - seven) // timedelta(hours=1))
        later = decide(Message("ad", PROMO), replace(digest, user_id=f"d-{index}"), [], rules, NOW)
        assert (later.outcome, later.reason) == (Outcome.DEFER, Reason.DIGEST)
        assert later.until is not None
        assert slot <= later.until < slot + rules.digest_grace
        assert len(later.trace) > 0
    assert spread == {0, 1, 2, 3}


def test_a_jitter_below_a_second_is_refused_not_truncated() -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        Rules(jitter=timedelta(milliseconds=400))
    one = Rules(
        quiet_hours=QuietHours((QuietWindow(time(22), time(7)),)),
        jitter=timedelta(seconds=1),
        default_zone="Europe/Berlin",
    )
    at_23 = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    decision = decide(Message("ad", PROMO), USER, [], one, at_23)
    assert decision.until == datetime(2026, 11, 24, 6, 0, tzinfo=UTC)  # [07:00, 07:00:01)
