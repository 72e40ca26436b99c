"""The lazily indexed ``ContactHistory``: scope lists, zones, send keys and ``with_sends``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pushwarden.policy import ContactEntry, ContactHistory, MessageKind

T0 = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
MK, TX = MessageKind.MARKETING, MessageKind.TRANSACTIONAL


def entry(hours: float, category: str, kind: MessageKind, campaign: str | None = None,
          key: str | None = None, zone: ZoneInfo | None = None) -> ContactEntry:  # fmt: skip
    at = T0 + timedelta(hours=hours)
    return ContactEntry(at if zone is None else at.astimezone(zone), category, kind, campaign, key)


ENTRIES = [
    entry(5, "promo", MK, "c1", "k1", BERLIN),  # across Berlin's spring-forward change
    entry(1, "orders", TX, None, "k2"),
    entry(3, "promo", MK, "c2", None),
    entry(2, "news", MK, "c1", "k3", BERLIN),
    entry(0.5, "promo", MK, None, "k4"),
]


def utc(*hours: float) -> tuple[datetime, ...]:
    return tuple(T0 + timedelta(hours=h) for h in hours)


def test_scope_lists_are_sorted_utc_instants() -> None:
    history = ContactHistory(ENTRIES)
    assert history.marketing_times is None  # nothing built before a rule asks
    assert history.marketing == utc(0.5, 2, 3, 5)
    assert all(at.tzinfo is UTC for at in history.marketing)
    assert history.all == utc(0.5, 1, 2, 3, 5)
    assert history.category_times("promo") == utc(0.5, 3, 5)
    assert history.category_times("missing") == ()
    assert history.campaign_times("c1") == utc(2, 5)
    assert history.by_category == {
        "promo": utc(0.5, 3, 5),
        "orders": (),  # marketing sends only: the transactional one counts by its kind
        "news": utc(2),
    }
    assert history.category_times("orders", transactional=True) == utc(1)
    assert history.by_campaign == {"c1": utc(2, 5), "c2": utc(3)}
    assert set(history.send_keys) == {"k1", "k2", "k3", "k4"}
    assert len(history) == 5


def test_with_sends_matches_a_fresh_history_whatever_was_built() -> None:
    extra = [
        entry(4, "promo", MK, "c1", "k9"),
        entry(0, "news", MK, "c3", None, BERLIN),
        entry(6, "orders", TX, None, None),
        ContactEntry(T0, "orders", TX, None, None, "t1"),
    ]
    fresh = ContactHistory([*ENTRIES, *extra])
    for touched in range(3):
        history = ContactHistory(reversed(ENTRIES))
        if touched >= 1:  # some lists built before growing, some not
            assert history.marketing == utc(0.5, 2, 3, 5)
            assert history.category_times("promo") == utc(0.5, 3, 5)
            assert history.campaign_times("c1") == utc(2, 5)
        if touched >= 2:
            assert len(history.all) == len(history.by_category["promo"]) + 2
            assert set(history.by_campaign) == {"c1", "c2"}
            assert history.category_times("orders", transactional=True) == utc(1)
            assert history.campaign_times("t1", transactional=True) == ()
        grown = history.with_sends(extra)
        assert grown.marketing == fresh.marketing
        assert grown.all == fresh.all
        assert grown.by_category == fresh.by_category
        assert grown.by_campaign == fresh.by_campaign
        assert grown.category_times("orders", True) == fresh.category_times("orders", True)
        assert grown.campaign_times("t1", True) == fresh.campaign_times("t1", True) == ()
        assert set(grown.send_keys) == set(fresh.send_keys)
        # The original is unchanged.
        assert history.marketing == utc(0.5, 2, 3, 5)
        assert "k9" not in history.send_keys
    assert ContactHistory(ENTRIES).with_sends([]).entries == tuple(ENTRIES)
