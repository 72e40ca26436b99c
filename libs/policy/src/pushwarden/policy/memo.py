"""The one bounded memo every cache of the policy uses.

Everything the policy memoises is a pure function of immutable values (a zone's local
midnights, a quiet window's instants on a day, a jitter seed), so a memo can be dropped
at any time and rebuilt with the same answers. A ``Memo`` is a ``dict`` (reads cost what
a dict's cost: the hot path reads them with ``get`` and ``[]``) that empties itself when
it reaches its limit, which keeps memory bounded without bookkeeping per entry.
``clear_all`` empties every memo (tests use it to show answers do not depend on them).
Safe to share between threads under the GIL: a racing writer can only store an equal
value or empty a memo.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Memo", "clear_all"]

K = TypeVar("K")
V = TypeVar("V")

_ALL: list[Memo[object, object]] = []


class Memo(dict[K, V]):
    """A dict of memoised values that empties itself at ``limit`` entries.

    Module-level memos register themselves (``clear_all`` empties them); a memo nested
    inside another (per zone, then per day) is built with ``register=False`` and goes
    when its parent is emptied.
    """

    __slots__ = ("limit", "name")

    def __init__(self, name: str, limit: int, *, register: bool = True) -> None:
        super().__init__()
        self.name = name
        self.limit = limit
        if register:
            _ALL.append(self)  # type: ignore[arg-type]

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the memo first when full); return it."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value

    def __repr__(self) -> str:
        return f"Memo({self.name!r}, {len(self)}/{self.limit})"


def clear_all() -> None:
    """Empty every registered memo."""
    for memo in _ALL:
        memo.clear()
