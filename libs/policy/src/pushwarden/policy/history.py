"""An indexed view of a recipient's contact history, built once per recipient.

Cap rules count sends by scope; the index keeps one sorted list of UTC instants per scope
so that counting a window is a single ``bisect``.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from datetime import UTC, datetime
from operator import attrgetter

from .model import (
    SELECT_ALL,
    SELECT_CATEGORY,
    SELECT_MARKETING,
    CapRule,
    ContactEntry,
    MessageKind,
)

__all__ = ["ContactHistory", "as_history"]

_EMPTY: list[datetime] = []
_MARKETING = MessageKind.MARKETING


_at = attrgetter("at")
_send_key = attrgetter("send_key")
_NO_KEY = frozenset([None])


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)


class ContactHistory:
    """Past sends to one recipient, indexed by scope.

    Immutable from the outside: ``with_sends`` returns a new history. Entries may come in
    any order.
    """

    __slots__ = ("all", "by_campaign", "by_category", "entries", "marketing", "send_keys")

    def __init__(self, entries: Iterable[ContactEntry] = ()) -> None:
        self.entries: tuple[ContactEntry, ...] = tuple(entries)
        # One sort (aware instants compare by their UTC value whatever their zone), then
        # every per-scope list is filled in time order.
        ordered = sorted(self.entries, key=_at)
        times: list[datetime] = []
        by_category: dict[str, list[datetime]] = {}
        by_campaign: dict[str, list[datetime]] = {}
        marketing: list[datetime] = []
        for entry in ordered:
            at = entry.at
            if at.tzinfo is not UTC:
                at = at.astimezone(UTC)
            times.append(at)
            if entry.kind is _MARKETING:
                marketing.append(at)
            category = by_category.get(entry.category_id)
            if category is None:
                by_category[entry.category_id] = [at]
            else:
                category.append(at)
            if entry.campaign_id is not None:
                campaign = by_campaign.get(entry.campaign_id)
                if campaign is None:
                    by_campaign[entry.campaign_id] = [at]
                else:
                    campaign.append(at)
        self.all = times
        self.marketing = marketing
        self.by_category = by_category
        self.by_campaign = by_campaign
        self.send_keys = frozenset(map(_send_key, self.entries)).difference(_NO_KEY)

    def __len__(self) -> int:
        return len(self.entries)

    def times_for(self, rule: CapRule, category_id: str, campaign_id: str | None) -> list[datetime]:
        """Sorted instants of the sends that ``rule`` counts for a message.

        The caller has already checked that the rule applies to the message.
        """
        selector = rule.selector
        if selector == SELECT_MARKETING:
            return self.marketing
        if selector == SELECT_ALL:
            return self.all
        if selector == SELECT_CATEGORY:
            return self.by_category.get(category_id, _EMPTY)
        if campaign_id is None:
            return _EMPTY
        return self.by_campaign.get(campaign_id, _EMPTY)

    def with_sends(self, entries: Iterable[ContactEntry]) -> ContactHistory:
        """A new history with ``entries`` added (used by arbitration for tentative sends)."""
        extra = tuple(entries)
        if not extra:
            return self
        new = ContactHistory.__new__(ContactHistory)
        new.entries = self.entries + extra
        new.all = list(self.all)
        new.marketing = list(self.marketing)
        new.by_category = {k: list(v) for k, v in self.by_category.items()}
        new.by_campaign = {k: list(v) for k, v in self.by_campaign.items()}
        keys = set(self.send_keys)
        for entry in extra:
            at = _utc(entry.at)
            insort(new.all, at)
            if entry.kind is _MARKETING:
                insort(new.marketing, at)
            insort(new.by_category.setdefault(entry.category_id, []), at)
            if entry.campaign_id is not None:
                insort(new.by_campaign.setdefault(entry.campaign_id, []), at)
            if entry.send_key is not None:
                keys.add(entry.send_key)
        new.send_keys = frozenset(keys)
        return new


def as_history(history: ContactHistory | Iterable[ContactEntry]) -> ContactHistory:
    """Accept either a prepared index or plain entries."""
    if isinstance(history, ContactHistory):
        return history
    return ContactHistory(history)
