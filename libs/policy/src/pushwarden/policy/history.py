"""An indexed view of a recipient's contact history, built once per recipient.

Cap rules count sends by scope; the index keeps one sorted tuple of UTC instants per scope
so that counting a window is a single ``bisect``. Each scope's list is built the first
time a rule asks for it (a decision needs the marketing list and one category's at most),
so building a history is one pass for the send keys and nothing per entry beyond that;
a history that is kept keeps only the lists its decisions used.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from operator import attrgetter
from typing import cast

from .model import (
    SELECT_ALL,
    SELECT_CATEGORY,
    SELECT_MARKETING,
    CapRule,
    ContactEntry,
    MessageKind,
)

__all__ = ["ContactHistory", "Times", "as_history"]

Times = tuple[datetime, ...]
"""Sorted UTC instants. A tuple rather than a list: its items sit in the object itself,
so reading the k-th latest send touches one object fewer (the engine's hot path)."""

_EMPTY: Times = ()
_MARKETING = MessageKind.MARKETING

_send_key = attrgetter("send_key")


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)


def _sorted_utc(times: list[datetime]) -> Times:
    """``times`` as UTC instants in order (usually already UTC and sorted)."""
    for at in times:
        if at.tzinfo is not UTC:
            times = [_utc(t) for t in times]
            break
    # Aware instants compare by their UTC value; timsort is linear on sorted input.
    times.sort()
    return tuple(times)


class ContactHistory:
    """Past sends to one recipient, indexed by scope.

    Immutable from the outside: ``with_sends`` returns a new history. Entries may come in
    any order. The per-scope lists (``marketing``, ``category_times``, ...) are built on
    first use and then kept; ``marketing_times`` and ``categories`` hold ``None`` until
    then (the engine reads those slots directly on its hot path). ``send_keys`` holds the
    sends' deduplication keys as the keys of a dict (values ``None``).
    """

    __slots__ = ("campaigns", "categories", "entries", "every", "marketing_times", "send_keys")

    def __init__(self, entries: Iterable[ContactEntry] = ()) -> None:
        self.entries: tuple[ContactEntry, ...] = tuple(entries)
        # A dict used as a set: membership costs the same as in a frozenset, and with
        # compact dicts it takes a fifth of the memory (464 bytes for 20 keys, not 2,264).
        keys = dict.fromkeys(map(_send_key, self.entries))
        keys.pop(None, None)
        self.send_keys = cast(dict[str, None], keys)
        self.every: Times | None = None
        self.marketing_times: Times | None = None
        self.categories: dict[str, Times] | None = None
        self.campaigns: dict[str, Times] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def all(self) -> Times:
        """Sorted UTC instants of every send."""
        times = self.every
        if times is None:
            times = self.every = _sorted_utc([e.at for e in self.entries])
        return times

    @property
    def marketing(self) -> Times:
        """Sorted UTC instants of the marketing sends."""
        times = self.marketing_times
        if times is None:
            times = self.marketing_times = _sorted_utc(
                [e.at for e in self.entries if e.kind is _MARKETING]
            )
        return times

    def category_times(self, category_id: str) -> Times:
        """Sorted UTC instants of the sends in one category."""
        built = self.categories
        if built is None:
            built = self.categories = {}
        else:
            times = built.get(category_id)
            if times is not None:
                return times
        times = _sorted_utc([e.at for e in self.entries if e.category_id == category_id])
        built[category_id] = times
        return times

    def campaign_times(self, campaign_id: str) -> Times:
        """Sorted UTC instants of the sends of one campaign."""
        built = self.campaigns
        if built is None:
            built = self.campaigns = {}
        else:
            times = built.get(campaign_id)
            if times is not None:
                return times
        times = _sorted_utc([e.at for e in self.entries if e.campaign_id == campaign_id])
        built[campaign_id] = times
        return times

    @property
    def by_category(self) -> dict[str, Times]:
        """Every category's sorted instants (builds all of them; for inspection)."""
        return {e.category_id: self.category_times(e.category_id) for e in self.entries}

    @property
    def by_campaign(self) -> dict[str, Times]:
        """Every campaign's sorted instants (builds all of them; for inspection)."""
        return {
            e.campaign_id: self.campaign_times(e.campaign_id)
            for e in self.entries
            if e.campaign_id is not None
        }

    def times_for(self, rule: CapRule, category_id: str, campaign_id: str | None) -> Times:
        """Sorted instants of the sends that ``rule`` counts for a message.

        The caller has already checked that the rule applies to the message.
        """
        selector = rule.selector
        if selector == SELECT_MARKETING:
            times = self.marketing_times
            return times if times is not None else self.marketing
        if selector == SELECT_ALL:
            return self.all
        if selector == SELECT_CATEGORY:
            built = self.categories
            found = built.get(category_id) if built is not None else None
            return found if found is not None else self.category_times(category_id)
        if campaign_id is None:
            return _EMPTY
        return self.campaign_times(campaign_id)

    def with_sends(self, entries: Iterable[ContactEntry]) -> ContactHistory:
        """A new history with ``entries`` added (used by arbitration for tentative sends)."""
        extra = tuple(entries)
        if not extra:
            return self
        new = ContactHistory.__new__(ContactHistory)
        new.entries = self.entries + extra
        new.send_keys = {
            **self.send_keys,
            **{entry.send_key: None for entry in extra if entry.send_key is not None},
        }
        # Lists already built are extended in place of rebuilding; the others stay lazy.
        new.every = _with(self.every, extra, None)
        new.marketing_times = _with(self.marketing_times, extra, _is_marketing)
        new.categories = _with_each(self.categories, extra, _category_of)
        new.campaigns = _with_each(self.campaigns, extra, _campaign_of)
        return new


def _is_marketing(entry: ContactEntry) -> bool:
    return entry.kind is _MARKETING


def _category_of(entry: ContactEntry) -> str | None:
    return entry.category_id


def _campaign_of(entry: ContactEntry) -> str | None:
    return entry.campaign_id


def _with(
    times: Times | None,
    extra: tuple[ContactEntry, ...],
    keep: Callable[[ContactEntry], bool] | None,
) -> Times | None:
    if times is None:
        return None
    grown = list(times)
    for entry in extra:
        if keep is None or keep(entry):
            insort(grown, _utc(entry.at))
    return tuple(grown)


def _with_each(
    built: dict[str, Times] | None,
    extra: tuple[ContactEntry, ...],
    key: Callable[[ContactEntry], str | None],
) -> dict[str, Times] | None:
    if built is None:
        return None
    grown = {k: list(v) for k, v in built.items()}
    for entry in extra:
        name = key(entry)
        times = None if name is None else grown.get(name)
        if times is not None:
            insort(times, _utc(entry.at))
    return {k: tuple(v) for k, v in grown.items()}


def as_history(history: ContactHistory | Iterable[ContactEntry]) -> ContactHistory:
    """Accept either a prepared index or plain entries."""
    if isinstance(history, ContactHistory):
        return history
    return ContactHistory(history)
