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
from pushwarden.runtime.feed import Batch, FeedRetention, StreamTiming, encode_cursor, stream
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
        self._retention = FeedRetention(
            PURGED_THROUGH,
            settings.retention,
            "the cursor is older than the feed's retention; resynchronise "
            "(e.g. CheckErasure) and follow from the head",
        )

    async def start_sequence(self, cursor: int | None, from_head: bool) -> int:
        """Where a stream starts: after ``cursor`` (OUT_OF_RANGE CURSOR_EXPIRED when
        retention dropped changes after it), at the head, or before the oldest."""
        async with self._deps.uow(read_only=True) as work:
            return await self._retention.start_sequence(work.state, work.feed, cursor, from_head)

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
        retention = self._retention

        async def read(position: int) -> Batch[StoredChange]:
            async with deps.uow(read_only=True) as work:
                changes, resume = await work.feed.read_after(app_id or None, position, batch, kinds)
                head, purged = await work.feed.head_and_watermark(PURGED_THROUGH)
                retention.check_held(position, purged)
                return Batch(changes, resume, resume >= head)

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
            purged = await self._retention.purge(
                work.state, work.feed, deps.clock.now(), work.feed.purge_before
            )
            await work.commit()
        return purged

    async def retention_worker(self, ctx: WorkerContext) -> None:
        """The hosted worker that applies the retention every hour."""
        while not ctx.stopping:
            await self.purge()
            if await ctx.sleep(RETENTION_INTERVAL_S):
                return
