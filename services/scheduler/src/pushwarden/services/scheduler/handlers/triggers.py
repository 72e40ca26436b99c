"""Triggers: CreateTrigger, ListTriggers, SetTriggerEnabled, and the follower of
segmentation's event stream that turns events into firings.

Creation checks the category at consent (it must exist; a trigger may be marketing
or transactional, which picks its dispatch lane). The trigger id derives from the
creation key, so a retry names the same trigger and a retry with another body is
refused.

The follower reads every app's events after its cursor, kept in ``service_state``
and written in the transaction that stores a batch's firings, so a restart neither
misses nor repeats a firing (a first start begins at the head: history never fires).
That transaction locks the cursor's row and goes on only if it still reads where the
batch began: with several replicas, each stretch of the stream is applied once.
Which triggers an event fires is decided by when segmentation received it: at or
after the trigger's ``enabled_at`` (both services read one clock). An event whose
TrackEvents began before CreateTrigger but committed after it is therefore not
applied, which is the safe side of "only events committed after".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import grpc

from pushwarden.common.v1 import decision_pb2
from pushwarden.runtime.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from pushwarden.runtime.workers import WorkerContext
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_pb2
from pushwarden.services.scheduler.domain.intents import Lane, NewIntent
from pushwarden.services.scheduler.domain.triggers import (
    NOT_REELIGIBLE,
    TRIGGER_CANCELLED,
    ActiveTrigger,
    Firing,
    plan_batch,
    trigger_id_for,
)
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.models import TriggerRow
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.peers.segmentation import SegmentationPeer

logger = logging.getLogger(__name__)

EVENTS_CURSOR = "segmentation_events_cursor"
_OUTPUT_ONLY = ("trigger_id", "enabled", "created_at")
_DISABLED = decision_pb2.REASON_CODE_TRIGGER_DISABLED


@dataclass(frozen=True, slots=True)
class StoredTrigger:
    """A trigger row's values, read inside its unit of work."""

    trigger_id: str
    idempotency_key: str
    definition: bytes
    enabled: bool
    created_at: datetime

    @classmethod
    def of(cls, row: TriggerRow) -> StoredTrigger:
        """A copy of ``row`` that outlives its session."""
        return cls(row.trigger_id, row.idempotency_key, row.definition, row.enabled, row.created_at)


def definition_of(trigger: resources_pb2.Trigger) -> bytes:
    """The stored form of a trigger: output-only fields cleared, deterministic bytes."""
    copy = resources_pb2.Trigger()
    copy.CopyFrom(trigger)
    for name in _OUTPUT_ONLY:
        copy.ClearField(name)  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


class TriggerHandlers:
    """The trigger RPCs' logic."""

    def __init__(self, deps: SchedulerDeps) -> None:
        self._deps = deps

    async def create(
        self, app_id: str, trigger: resources_pb2.Trigger, idempotency_key: str
    ) -> tuple[StoredTrigger, bool]:
        """Store an enabled trigger; the same key returns the first one (replayed)."""
        definition = definition_of(trigger)
        async with self._deps.uow(read_only=True) as work:
            found = await work.triggers.by_key(app_id, idempotency_key)
            first = None if found is None else StoredTrigger.of(found)
        if first is not None:
            return _replay(first, definition), True
        try:
            kinds = await self._deps.consent.kinds(app_id, [trigger.category_id])
        except PeerUnavailable as error:
            raise Unavailable(f"cannot check the trigger's category: {error}") from error
        kind = kinds.get(trigger.category_id)
        if kind is None:
            raise InvalidArgument(
                "the trigger names what does not exist: trigger.category_id",
                [("trigger.category_id", "no such category at consent")],
                reason="UNKNOWN_REFERENCE",
            )
        lane = Lane.TRANSACTIONAL if kind == "TRANSACTIONAL" else Lane.MARKETING
        now = self._deps.clock.now()
        trigger_id = trigger_id_for(app_id, idempotency_key)
        async with self._deps.uow() as work:
            added = await work.triggers.add(
                {
                    "app_id": app_id,
                    "trigger_id": trigger_id,
                    "idempotency_key": idempotency_key,
                    "category_id": trigger.category_id,
                    "lane": int(lane),
                    "event_name": trigger.event.event_name,
                    "definition": definition,
                    "enabled": True,
                    "enabled_at": now,
                    "created_at": now,
                }
            )
            stored = await work.triggers.get(app_id, trigger_id)
            assert stored is not None
            row = StoredTrigger.of(stored)
            await work.commit()
        if not added:
            return _replay(row, definition), True
        return row, False

    async def page(
        self, app_id: str, enabled: bool | None, after: str | None, limit: int
    ) -> list[StoredTrigger]:
        """A page of an app's triggers by id."""
        async with self._deps.uow(read_only=True) as work:
            return [
                StoredTrigger.of(row)
                for row in await work.triggers.page(app_id, enabled, after, limit)
            ]

    async def set_enabled(self, app_id: str, trigger_id: str, enabled: bool) -> StoredTrigger:
        """Enable (events from now on fire it) or disable (pending firings dropped,
        TRIGGER_DISABLED); asking for the state it is in changes nothing."""
        now = self._deps.clock.now()
        async with self._deps.uow() as work:
            row = await work.triggers.get(app_id, trigger_id, lock=True)
            if row is None:
                raise NotFound(
                    f"no trigger {trigger_id!r}", resource_type="trigger", resource_name=trigger_id
                )
            if row.enabled != enabled:
                row.enabled = enabled
                if enabled:
                    row.enabled_at = now
                else:
                    await work.triggers.drop_pending(app_id, trigger_id, _DISABLED, now)
            stored = StoredTrigger.of(row)
            await work.commit()
        return stored


def _replay(row: StoredTrigger, definition: bytes) -> StoredTrigger:
    if row.definition != definition:
        raise AlreadyExists(
            "this idempotency key created another trigger",
            resource_type="idempotency_key",
            resource_name=row.idempotency_key,
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    return row


@dataclass(frozen=True, slots=True)
class FollowerSettings:
    """How the event follower reads the stream."""

    batch: int = 500
    stream_s: float = 300.0
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 10.0


class TriggerFollower:
    """Follows segmentation's event stream (a hosted worker) and stores firings."""

    def __init__(
        self,
        deps: SchedulerDeps,
        segmentation: SegmentationPeer,
        settings: FollowerSettings | None = None,
    ) -> None:
        self._deps = deps
        self._segmentation = segmentation
        self._settings = settings or FollowerSettings()
        self._definitions: dict[tuple[str, str], resources_pb2.Trigger] = {}

    async def run(self, ctx: WorkerContext) -> None:
        """Follow until the app stops; reconnect with backoff after failures."""
        backoff = self._settings.initial_backoff_s
        while True:
            try:
                progressed = await self._follow_once(ctx)
            except (grpc.aio.AioRpcError, PeerUnavailable) as error:
                progressed = False
                if not ctx.stopping:
                    logger.warning("event stream unavailable; retrying: %s", error)
            if progressed:
                backoff = self._settings.initial_backoff_s
            if await ctx.sleep(backoff):
                return
            backoff = min(backoff * 2, self._settings.max_backoff_s)

    async def _follow_once(self, ctx: WorkerContext) -> bool:
        async with self._deps.uow(read_only=True) as work:
            cursor = await work.state.get(EVENTS_CURSOR)
        call = self._segmentation.stream_events(
            cursor or "",
            from_head=cursor is None,
            batch=self._settings.batch,
            timeout_s=self._settings.stream_s,
        )
        stopper = asyncio.ensure_future(ctx.wait_stopping())
        stopper.add_done_callback(lambda _: call.cancel())
        progressed = False
        try:
            async for message in call:
                if message.events or (message.cursor and message.cursor != cursor):
                    if not await self.apply(list(message.events), message.cursor, after=cursor):
                        return True  # another replica moved the cursor: resume from it
                    cursor = message.cursor
                    progressed = True
        except asyncio.CancelledError:
            if ctx.stopping:
                return progressed
            raise
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return True  # the stream's planned end
            if error.code() != grpc.StatusCode.OUT_OF_RANGE or ctx.stopping:
                raise
            # The cursor outlived the retention: what was missed is gone; start at the head.
            logger.warning("event stream cursor expired; continuing from the head")
            async with self._deps.uow() as work:
                await work.state.put(EVENTS_CURSOR, None)
                await work.commit()
            return True
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        return progressed

    async def apply(
        self, events: Sequence[segmentation_pb2.Event], cursor: str, *, after: str | None
    ) -> bool:
        """Store what ``events`` (read from the stored cursor ``after``) do to the
        firings, with the cursor after them, in one transaction (reads and writes one
        statement each). False, storing nothing, when the stored cursor is no longer
        ``after`` (another replica's follower applied them)."""
        deps = self._deps
        now = deps.clock.now()
        lanes: set[Lane] = set()
        async with deps.uow() as work:
            if await work.triggers.locked_cursor(EVENTS_CURSOR) != after:
                return False
            if events:
                rows = await work.triggers.enabled_of({e.app_id for e in events})
                triggers = [self._active(row) for row in rows]
                stored = await work.triggers.firings(
                    {(e.app_id, e.user_id) for e in events}, [t.trigger_id for t in triggers]
                )
                plan = plan_batch(events, triggers, stored, now)
                await work.intents.add([_intent(f, now) for f in plan.firings])
                await work.intents.add_dropped(
                    [(_intent(f, now), NOT_REELIGIBLE) for f in plan.not_reeligible]
                    + [(_intent(f, now), TRIGGER_CANCELLED) for f in plan.cancelled],
                    now,
                )
                await work.triggers.cancel(list(plan.cancel), TRIGGER_CANCELLED, now)
                lanes.update(Lane(f.trigger.lane) for f in plan.firings)
            await work.state.put(EVENTS_CURSOR, cursor)
            await work.commit()
        for lane in lanes:
            deps.intents_arrived(lane)
        return True

    def _active(self, row: TriggerRow) -> ActiveTrigger:
        key = (row.app_id, row.trigger_id)
        definition = self._definitions.get(key)
        if definition is None:
            definition = resources_pb2.Trigger.FromString(row.definition)
            self._definitions[key] = definition
        return ActiveTrigger(row.app_id, row.trigger_id, row.lane, row.enabled_at, definition)


def _intent(firing: Firing, now: datetime) -> NewIntent:
    trigger = firing.trigger
    definition = trigger.definition
    event = firing.event
    return NewIntent(
        app_id=trigger.app_id,
        send_id=firing.send_id,
        user_id=event.user_id,
        lane=Lane(trigger.lane),
        category_id=definition.category_id,
        topic_id=definition.topic_id,
        trigger_id=trigger.trigger_id,
        event_id=event.event_id,
        body=event.SerializeToString(deterministic=True),
        priority=int(definition.priority),
        respect_quiet_hours=False,
        expires_at=firing.expires_at,
        due_at=firing.due_at,
        created_at=now,
    )
