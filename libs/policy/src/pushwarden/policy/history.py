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

from .model import CapRule, CapScope, ContactEntry, Message, MessageKind

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


# What a scoped list holds: sends of one category or campaign, with or without the
# transactional ones (``CapRule.count_transactional``).
_CATEGORY, _CATEGORY_ALL, _CAMPAIGN, _CAMPAIGN_ALL = range(4)
_Key = tuple[int, str]


def _in_scope(code: int, name: str, entry: ContactEntry) -> bool:
    """Whether ``entry`` belongs to the scoped list ``(code, name)``."""
    if not code & 1 and entry.kind is not _MARKETING:
        return False  # the entry's own kind decides: it is what was sent
    if code <= _CATEGORY_ALL:
        return entry.category_id == name
    return entry.campaign_id == name


class ContactHistory:
    """Past sends to one recipient, indexed by scope.

    Immutable from the outside: ``with_sends`` returns a new history. Entries may come in
    any order. Each scope's sorted instants are built on first use and then kept.
    ``marketing_times``, ``categories`` and ``campaigns`` (the marketing list and the
    per-category and per-campaign marketing lists, which a decision's hot path reads)
    hold ``None`` until built.
    ``send_keys`` holds the sends' deduplication keys as the keys of a dict.

    An entry counts by its own ``kind``: a transactional send in a marketing category (or
    the reverse) counts as what it was sent as, so caps that count marketing sends skip a
    transactional entry whatever its category or campaign.
    """

    __slots__ = (
        "campaigns",
        "categories",
        "entries",
        "every",
        "marketing_times",
        "scoped",
        "send_keys",
    )

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
        self.scoped: dict[_Key, Times] | None = None

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

    def category_times(self, category_id: str, transactional: bool = False) -> Times:
        """Sorted UTC instants of the marketing sends (all sends if ``transactional``) in
        one category."""
        if transactional:
            return self._scoped((_CATEGORY_ALL, category_id))
        built = self.categories
        if built is None:
            built = self.categories = {}
        else:
            times = built.get(category_id)
            if times is not None:
                return times
        times = built[category_id] = self._build((_CATEGORY, category_id))
        return times

    def campaign_times(self, campaign_id: str, transactional: bool = False) -> Times:
        """Sorted UTC instants of the marketing sends (all sends if ``transactional``) of
        one campaign (keyed by campaign id: a trigger's sends never count here)."""
        if transactional:
            return self._scoped((_CAMPAIGN_ALL, campaign_id))
        built = self.campaigns
        if built is None:
            built = self.campaigns = {}
        else:
            times = built.get(campaign_id)
            if times is not None:
                return times
        times = built[campaign_id] = self._build((_CAMPAIGN, campaign_id))
        return times

    def _scoped(self, key: _Key) -> Times:
        built = self.scoped
        if built is None:
            built = self.scoped = {}
        else:
            times = built.get(key)
            if times is not None:
                return times
        times = built[key] = self._build(key)
        return times

    def _build(self, key: _Key) -> Times:
        code, name = key
        return _sorted_utc([e.at for e in self.entries if _in_scope(code, name, e)])

    @property
    def by_category(self) -> dict[str, Times]:
        """Every category's marketing instants (builds all of them; for inspection)."""
        return {e.category_id: self.category_times(e.category_id) for e in self.entries}

    @property
    def by_campaign(self) -> dict[str, Times]:
        """Every campaign's marketing instants (builds all of them; for inspection)."""
        return {
            e.campaign_id: self.campaign_times(e.campaign_id)
            for e in self.entries
            if e.campaign_id is not None
        }

    def times_for(self, rule: CapRule, message: Message) -> Times:
        """Sorted instants of the sends that ``rule`` counts for ``message``.

        The caller has already checked that the rule applies to the message.
        """
        transactional = rule.count_transactional
        if rule.scope is CapScope.ALL_MARKETING:
            return self.all if transactional else self.marketing
        if rule.scope is CapScope.CATEGORY:
            return self.category_times(message.category.category_id, transactional)
        if message.campaign_id is None:
            return _EMPTY
        return self.campaign_times(message.campaign_id, transactional)

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
        new.every = _with(self.every, extra, _is_any)
        new.marketing_times = _with(self.marketing_times, extra, _is_marketing)
        new.categories = new.campaigns = new.scoped = None
        if self.categories is not None:
            new.categories = {
                name: _grown(times, extra, _CATEGORY, name)
                for name, times in self.categories.items()
            }
        if self.campaigns is not None:
            new.campaigns = {
                name: _grown(times, extra, _CAMPAIGN, name)
                for name, times in self.campaigns.items()
            }
        if self.scoped is not None:
            new.scoped = {key: _grown(times, extra, *key) for key, times in self.scoped.items()}
        return new


def _is_any(entry: ContactEntry) -> bool:
    return True


def _is_marketing(entry: ContactEntry) -> bool:
    return entry.kind is _MARKETING


def _with(
    times: Times | None,
    extra: tuple[ContactEntry, ...],
    keep: Callable[[ContactEntry], bool],
) -> Times | None:
    if times is None:
        return None
    grown = list(times)
    for entry in extra:
        if keep(entry):
            insort(grown, _utc(entry.at))
    return tuple(grown)


def _grown(times: Times, extra: tuple[ContactEntry, ...], code: int, name: str) -> Times:
    grown = list(times)
    for entry in extra:
        if _in_scope(code, name, entry):
            insort(grown, _utc(entry.at))
    return tuple(grown)


def as_history(history: ContactHistory | Iterable[ContactEntry]) -> ContactHistory:
    """Accept either a prepared index or plain entries."""
    if isinstance(history, ContactHistory):
        return history
    return ContactHistory(history)
