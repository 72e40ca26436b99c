"""TrackEvents, StreamEvents and the events' retention.

Appends are serialised under the append lock held until commit (see
:mod:`..storage.events`), so reading ``sequence > cursor`` in order never skips an event
that commits later with a smaller sequence. An idle stream sends a heartbeat (an empty
``caught_up`` message) every ``heartbeat_s``; it notices events committed in this
process at once and those of other replicas within ``poll_s``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from pushwarden.runtime.feed import Batch, FeedRetention, StreamTiming, stream
from pushwarden.runtime.workers import WorkerContext
from pushwarden.segmentation.v1 import messages_pb2, resources_pb2
from pushwarden.services.segmentation.domain.events import (
    TrackedEvent,
    encode_cursor,
    event_proto,
)
from pushwarden.services.segmentation.handlers.common import SegmentationDeps
from pushwarden.services.segmentation.storage.events import NewEvent, StoredEvent

PURGED_THROUGH: Final = "events_purged_through"
RETENTION_INTERVAL_S: Final = 3600.0
MAX_FUTURE_SKEW: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What happened to one event: APPLIED, UNCHANGED or REJECTED (with field and why)."""

    event_id: str
    status: str
    field: str = ""
    message: str = ""


def stored_event_proto(event: StoredEvent) -> resources_pb2.Event:
    """A stored event as the contract's Event."""
    return event_proto(
        sequence=event.sequence,
        app_id=event.app_id,
        event_id=event.event_id,
        user_id=event.user_id,
        name=event.name,
        occurred_at=event.occurred_at,
        received_at=event.received_at,
        properties_blob=event.properties_blob,
    )


class EventHandlers:
    """Record events, serve the stream, keep the retention."""

    def __init__(self, deps: SegmentationDeps, timing: StreamTiming) -> None:
        self._deps = deps
        self._timing = timing
        self._retention = FeedRetention(
            PURGED_THROUGH,
            deps.retention,
            "the cursor is older than the events' retention; follow again from the head",
        )

    async def track(self, app_id: str, events: Sequence[TrackedEvent]) -> list[EventOutcome]:
        """Record a checked batch: a skewed event is REJECTED alone, a known id (or one
        repeated in the batch) is UNCHANGED, the rest are APPLIED in one transaction."""
        deps = self._deps
        outcomes: list[EventOutcome | None] = [None] * len(events)
        async with deps.uow() as work:
            await work.lock_appends()
            now = deps.clock.now()
            oldest = now - deps.retention
            candidates: list[tuple[int, TrackedEvent]] = []
            for index, event in enumerate(events):
                if event.occurred_at > now + MAX_FUTURE_SKEW:
                    outcomes[index] = EventOutcome(
                        event.event_id,
                        "REJECTED",
                        f"events[{index}].occurred_at",
                        "more than 5 minutes in the future",
                    )
                elif event.occurred_at < oldest:
                    outcomes[index] = EventOutcome(
                        event.event_id,
                        "REJECTED",
                        f"events[{index}].occurred_at",
                        f"older than the retention ({deps.retention.days} days)",
                    )
                else:
                    candidates.append((index, event))
            known = await work.events.known_ids(app_id, [e.event_id for _, e in candidates])
            new: list[NewEvent] = []
            for index, event in candidates:
                if event.event_id in known:
                    outcomes[index] = EventOutcome(event.event_id, "UNCHANGED")
                    continue
                known.add(event.event_id)
                outcomes[index] = EventOutcome(event.event_id, "APPLIED")
                new.append(
                    NewEvent(
                        event.event_id,
                        event.user_id,
                        event.name,
                        event.occurred_at,
                        event.properties,
                        event.properties_blob,
                    )
                )
            await work.events.append(app_id, new, now)
            await work.commit()
        if new:
            deps.signal.notify()
        return [outcome for outcome in outcomes if outcome is not None]

    async def start_sequence(self, cursor: int | None, from_head: bool) -> int:
        """Where a stream starts: after ``cursor`` (OUT_OF_RANGE CURSOR_EXPIRED when
        retention dropped events after it), at the head, or before the oldest."""
        async with self._deps.uow(read_only=True) as work:
            return await self._retention.start_sequence(work.state, work.events, cursor, from_head)

    def stream(
        self,
        app_id: str,
        after: int,
        names: Collection[str],
        batch: int,
        stop_at_head: bool,
        announce: bool,
    ) -> AsyncIterator[messages_pb2.StreamEventsResponse]:
        """Stream events after ``after``; ``announce`` sends a first empty caught-up
        message (a from-head start, so the follower can store its cursor)."""
        deps = self._deps
        retention = self._retention

        async def read(position: int) -> Batch[StoredEvent]:
            async with deps.uow(read_only=True) as work:
                events, resume = await work.events.read_after(
                    app_id or None, position, batch, names
                )
                await retention.still_held(work.state, position)
                return Batch(events, resume, resume >= await work.events.head())

        def message(
            events: list[StoredEvent], position: int, caught_up: bool
        ) -> messages_pb2.StreamEventsResponse:
            return messages_pb2.StreamEventsResponse(
                events=[stored_event_proto(event) for event in events],
                cursor=encode_cursor(app_id, position),
                caught_up=caught_up,
            )

        return stream(
            start=after,
            read=read,
            message=message,
            signal=deps.signal,
            timing=self._timing,
            stop_at_head=stop_at_head,
            announce=announce,
        )

    async def purge(self) -> int:
        """Drop events received before the retention; remember how far (for
        CURSOR_EXPIRED)."""
        deps = self._deps
        async with deps.uow() as work:
            await work.lock_appends()
            purged = await self._retention.purge(
                work.state, work.events, deps.clock.now(), work.events.purge_received_before
            )
            await work.commit()
        return purged

    async def retention_worker(self, ctx: WorkerContext) -> None:
        """The hosted worker that applies the retention every hour."""
        while not ctx.stopping:
            await self.purge()
            if await ctx.sleep(RETENTION_INTERVAL_S):
                return
