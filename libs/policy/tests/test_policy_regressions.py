"""Wrong answers an independent check found, each pinned by the example that showed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pushwarden.policy import (
    CalendarWindow,
    CapAction,
    CapRule,
    CapScope,
    Category,
    ContactEntry,
    ContactHistory,
    Message,
    MessageKind,
    Outcome,
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
    rules = Rules(caps=(CapRule(CapScope.CAMPAIGN, 1, timedelta(hours=24)),), default_zone="UTC")
    cart = Message("cart", PROMO, trigger_id="x")
    campaign_x = ContactEntry(NOW - timedelta(hours=1), "promo", MK, campaign_id="x")
    trigger_x = ContactEntry(NOW - timedelta(hours=1), "promo", MK, trigger_id="x")
    assert decide(cart, USER, [campaign_x], rules, NOW).outcome is Outcome.ALLOW
    assert decide(cart, USER, [trigger_x], rules, NOW).reason is Reason.CAPPED
    campaign = Message("news", PROMO, campaign_id="x")
    assert decide(campaign, USER, [trigger_x], rules, NOW).outcome is Outcome.ALLOW
    assert decide(campaign, USER, [campaign_x], rules, NOW).reason is Reason.CAPPED
