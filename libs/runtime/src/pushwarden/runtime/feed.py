"""Ordered change feeds served from a cursor (consent's WatchChanges, segmentation's
StreamEvents): the pieces every such feed shares.

Storage side (each service's own repository): a change gets its sequence from a counter
while the writer holds a lock that it keeps until commit (a transaction-scoped advisory
lock on PostgreSQL, the single writer on SQLite), so sequences are handed out in commit
order and a reader that asks for ``sequence > cursor`` never skips a change that commits
later with a smaller number. Sequences are never reused, also after retention or erasure
deleted rows.

Serving side (here): an opaque cursor bound to the feed's filter, a signal that wakes
the streams of this process when a change commits, the loop that streams batches,
reports ``caught_up``, sends heartbeats while idle and polls for changes committed by
other replicas, and the retention cut-off (:class:`FeedRetention`): which sequence a
stream starts after and, when expired rows are deleted, the watermark below which a
cursor is refused as ``CURSOR_EXPIRED``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar

from pushwarden.runtime.errors import OutOfRange, Unavailable

T = TypeVar("T")
R = TypeVar("R")


class FeedSignal:
    """Wakes the feed streams of this process when a change commits, and ends them when
    the server starts draining (:meth:`close`)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        """A change committed: wake every waiter."""
        self._event.set()
        self._event = asyncio.Event()

    def close(self) -> None:
        """The server is draining: every stream ends at its next wait (UNAVAILABLE, so
        its follower reconnects, to another replica or after the restart) instead of
        being cancelled, possibly mid-query, when the grace period runs out."""
        self.closed = True
        self.notify()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for the next change or ``timeout_s``, whichever comes first; True when a
        change (or :meth:`close`) woke the waiter."""
        if self.closed:
            return True
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        return event.is_set()


def _filter_tag(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:12]


def encode_cursor(filter_key: str, sequence: int, *, version: str = "v1") -> str:
    """The cursor after change ``sequence`` of the feed filtered by ``filter_key`` (for
    example the app id, "" for every app). ``version`` tags the feed's cursors (consent's
    change feed "v1", segmentation's event stream "s1"), so one feed refuses another's
    cursor and the cursors followers already stored stay valid."""
    raw = f"{version}:{sequence}:{_filter_tag(filter_key)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, filter_key: str, *, version: str = "v1") -> int | None:
    """The sequence in ``cursor``; None when it is malformed, was made for another
    filter or carries another feed's ``version`` tag."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag_version, sequence, tag = raw.split(":")
        value = int(sequence)
    except (ValueError, UnicodeDecodeError):
        return None
    if tag_version != version or tag != _filter_tag(filter_key) or value < 0:
        return None
    return value


@dataclass(frozen=True, slots=True)
class Batch(Generic[T]):
    """What one read of a feed returns: the wanted items (after any kind filter), the
    sequence to resume after (past filtered-out items too) and whether that is the head."""

    items: list[T]
    resume: int
    at_head: bool


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """How an idle stream behaves. Woken by a change of this process, a stream waits
    ``gather_s`` more before it reads, so that a burst of commits is read as one batch
    rather than one read (and its statements) per commit per stream."""

    heartbeat_s: float
    poll_s: float
    gather_s: float = 0.02


async def stream(
    *,
    start: int,
    read: Callable[[int], Awaitable[Batch[T]]],
    message: Callable[[list[T], int, bool], R],
    signal: FeedSignal,
    timing: StreamTiming,
    stop_at_head: bool,
    announce: bool,
) -> AsyncIterator[R]:
    """Stream a feed after sequence ``start``: ``read(after)`` returns the next batch,
    ``message(items, resume, caught_up)`` builds a response. ``announce`` first sends an
    empty caught-up message (a from-head start, so the follower can store its cursor);
    ``stop_at_head`` ends the stream once caught up; otherwise an idle stream sends an
    empty caught-up heartbeat every ``heartbeat_s`` and checks for new changes every
    ``poll_s`` (at once when this process commits one)."""
    position = start
    if announce:
        yield message([], position, True)
    idle_for = 0.0
    while True:
        if signal.closed:
            raise Unavailable("the server is shutting down; follow again from your cursor")
        batch = await read(position)
        if batch.resume != position or batch.items:
            position = batch.resume
            idle_for = 0.0
            yield message(batch.items, position, batch.at_head)
            if not batch.at_head:
                continue
        if stop_at_head:
            if not batch.items:
                yield message([], position, True)
            return
        if idle_for >= timing.heartbeat_s:
            idle_for = 0.0
            yield message([], position, True)
        if await signal.wait(timing.poll_s) and timing.gather_s > 0 and not signal.closed:
            await asyncio.sleep(timing.gather_s)
        idle_for += timing.poll_s


class RetainedLog(Protocol):
    """A feed's rows as its retention sees them (the service's feed repository)."""

    async def head(self) -> int:
        """The latest sequence handed out (0 before the first change)."""
        ...

    async def oldest(self) -> int | None:
        """The oldest retained sequence (None when the feed holds no row)."""
        ...


class Watermarks(Protocol):
    """Where the retention keeps its watermark (the service's ``service_state``)."""

    async def get(self, name: str) -> str | None:
        """The value, or None."""
        ...

    async def put(self, name: str, value: str) -> None:
        """Set the value."""
        ...


@dataclass(frozen=True, slots=True)
class FeedRetention:
    """A feed's retention cut-off: rows older than ``keep`` are deleted, and the sequence
    below which the feed no longer holds every row (``purged through``) is stored under
    ``watermark``. A cursor before it has missed deleted rows: OUT_OF_RANGE
    CURSOR_EXPIRED (``expired_message`` tells the follower what to do). Both methods run
    inside the caller's unit of work; :meth:`purge` needs the feed's append lock, so no
    change commits between reading the head and deleting."""

    watermark: str
    keep: timedelta
    expired_message: str

    async def start_sequence(
        self, state: Watermarks, log: RetainedLog, cursor: int | None, from_head: bool
    ) -> int:
        """Where a stream starts: after ``cursor`` (expired when older than the
        watermark), at the head (``from_head``), or else after the watermark, i.e. at
        the oldest change still held."""
        purged = int(await state.get(self.watermark) or 0)
        if cursor is not None:
            self.check_held(cursor, purged)
            return cursor
        if from_head:
            return await log.head()
        return purged

    async def still_held(self, state: Watermarks, position: int) -> None:
        """OUT_OF_RANGE CURSOR_EXPIRED when a purge deleted rows after ``position``
        while a stream was on its way: a stream calls it after reading each page (in the
        page's unit of work), so a reader that fell behind the retention while streaming
        is told so instead of silently skipping the deleted rows."""
        self.check_held(position, int(await state.get(self.watermark) or 0))

    def check_held(self, position: int, purged: int) -> None:
        """:meth:`still_held` for a caller that read the watermark ``purged`` itself
        (together with the feed's head, in one statement)."""
        if position < purged:
            raise OutOfRange(
                self.expired_message,
                reason="CURSOR_EXPIRED",
                metadata={"purged_through": str(purged)},
            )

    def cutoff(self, now: datetime) -> datetime:
        """Rows stamped before this instant are expired."""
        return now - self.keep

    async def purge(
        self,
        state: Watermarks,
        log: RetainedLog,
        now: datetime,
        delete_before: Callable[[datetime], Awaitable[int]],
    ) -> int:
        """Delete the expired rows (``delete_before(cutoff)`` returns how many) and move
        the watermark to just before the oldest row kept, or to the head when none is
        left; returns the number deleted (the watermark stays when it is 0)."""
        head = await log.head()
        purged = await delete_before(self.cutoff(now))
        if purged:
            oldest = await log.oldest()
            through = (oldest - 1) if oldest is not None else head
            await state.put(self.watermark, str(through))
        return purged
