"""WatchChanges: every change exactly once, in commit order, from a cursor; and the
feed's retention.

Appends are serialised under the append lock held until commit (see
:mod:`..storage.feed`), so reading ``sequence > cursor`` in order never skips a change
that commits later with a smaller sequence. An idle stream sends a heartbeat (an empty
``caught_up`` message) every ``heartbeat_s``; it notices changes committed in this
process at once and those of other replicas within ``poll_s``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import timedelta

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.errors import OutOfRange
from pushwarden.runtime.feed import Batch, StreamTiming, encode_cursor, stream
from pushwarden.runtime.workers import WorkerContext
from pushwarden.services.consent.handlers.common import ConsentDeps
from pushwarden.services.consent.storage.feed import StoredChange

PURGED_THROUGH = "feed_purged_through"
RETENTION_INTERVAL_S = 3600.0


@dataclass(frozen=True, slots=True)
class FeedSettings:
    """How the feed behaves (from the service's config)."""

    retention: timedelta
    heartbeat_s: float
    poll_s: float


def change_proto(change: StoredChange, app_filter: str) -> resources_pb2.Change:
    """A stored change as the contract's Change, with its cursor."""
    proto = resources_pb2.Change.FromString(change.detail)
    proto.sequence = change.sequence
    proto.cursor = encode_cursor(app_filter, change.sequence)
    return proto


class FeedHandlers:
    """Serve the change feed and keep its retention."""

    def __init__(self, deps: ConsentDeps, settings: FeedSettings) -> None:
        self._deps = deps
        self._settings = settings

    async def start_sequence(self, cursor: int | None, from_head: bool) -> int:
        """Where a stream starts: after ``cursor`` (OUT_OF_RANGE CURSOR_EXPIRED when
        retention dropped changes after it), at the head, or before the oldest."""
        async with self._deps.uow(read_only=True) as work:
            purged = int(await work.state.get(PURGED_THROUGH) or 0)
            if cursor is not None:
                if cursor < purged:
                    raise OutOfRange(
                        "the cursor is older than the feed's retention; resynchronise "
                        "(e.g. CheckErasure) and follow from the head",
                        reason="CURSOR_EXPIRED",
                        metadata={"purged_through": str(purged)},
                    )
                return cursor
            if from_head:
                return await work.feed.head()
            return purged

    def watch(
        self,
        app_id: str,
        after: int,
        kinds: Collection[str],
        batch: int,
        stop_at_head: bool,
        announce: bool,
    ) -> AsyncIterator[messages_pb2.WatchChangesResponse]:
        """Stream changes after ``after``; ``announce`` sends a first empty caught-up
        message (a from-head start, so the follower can store its cursor)."""
        deps = self._deps

        async def read(position: int) -> Batch[StoredChange]:
            async with deps.uow(read_only=True) as work:
                changes, resume = await work.feed.read_after(app_id or None, position, batch, kinds)
                return Batch(changes, resume, resume >= await work.feed.head())

        def message(
            changes: list[StoredChange], position: int, caught_up: bool
        ) -> messages_pb2.WatchChangesResponse:
            return messages_pb2.WatchChangesResponse(
                changes=[change_proto(change, app_id) for change in changes],
                cursor=encode_cursor(app_id, position),
                caught_up=caught_up,
            )

        return stream(
            start=after,
            read=read,
            message=message,
            signal=deps.signal,
            timing=StreamTiming(self._settings.heartbeat_s, self._settings.poll_s),
            stop_at_head=stop_at_head,
            announce=announce,
        )

    async def purge(self) -> int:
        """Drop changes older than the retention; remember how far (for CURSOR_EXPIRED)."""
        deps = self._deps
        async with deps.uow() as work:
            await work.lock_appends()
            cutoff = deps.clock.now() - self._settings.retention
            head = await work.feed.head()
            purged = await work.feed.purge_before(cutoff)
            if purged:
                oldest = await work.feed.oldest()
                through = (oldest - 1) if oldest is not None else head
                await work.state.put(PURGED_THROUGH, str(through))
            await work.commit()
        return purged

    async def retention_worker(self, ctx: WorkerContext) -> None:
        """The hosted worker that applies the retention every hour."""
        while not ctx.stopping:
            await self.purge()
            if await ctx.sleep(RETENTION_INTERVAL_S):
                return
