"""The one bounded memo every cache of the policy uses.

Everything the policy memoises is a pure function of immutable values (a zone's local
midnights, a quiet window's instants on a day, a jitter seed), so a memo can be emptied
at any time and rebuilt with the same answers. A ``Memo`` keeps its entries in a plain
``dict`` (``data``: the hot path reads it directly, at a dict's speed) and empties it when
it reaches its limit, which bounds memory without bookkeeping per entry. A table nested
in a memo's value (per zone, then per day) is a plain dict grown with ``bounded_put``; it
goes when its parent is emptied. ``clear_all`` empties every memo (tests use it to show
that no answer depends on them). Safe to share between threads under the GIL: a racing
writer can only store an equal value or empty a table.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Memo", "bounded_put", "clear_all"]

K = TypeVar("K")
V = TypeVar("V")


def bounded_put(table: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` in ``table``, emptying it first when it holds
    ``limit`` entries; return ``value``."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value


class Memo(Generic[K, V]):
    """A named, bounded table of memoised values, registered for ``clear_all``.

    Read ``data`` (a plain dict) directly; write through ``put``.
    """

    __slots__ = ("data", "limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.data: dict[K, V] = {}
        _ALL.append(self)  # type: ignore[arg-type]

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the memo first when full); return it."""
        return bounded_put(self.data, key, value, self.limit)

    def clear(self) -> None:
        """Drop every entry."""
        self.data.clear()

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Memo({self.name!r}, {len(self.data)}/{self.limit})"


_ALL: list[Memo[object, object]] = []


def clear_all() -> None:
    """Empty every memo."""
    for memo in _ALL:
        memo.clear()
