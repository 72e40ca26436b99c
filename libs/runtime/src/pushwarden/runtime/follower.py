"""Following consent's change feed from a stored cursor: the worker that segmentation,
scheduler and delivery host to erase a user when consent says ERASED (and to react to
other changes).

The follower reads ``WatchChanges`` from the cursor its store holds (on the very first
start from the head, or from the oldest change the feed still holds), hands every batch
of changes to the service's handler and stores the cursor only after the handler
returned: a crash between the two replays the batch, so handlers must be idempotent
(deleting an erased user's rows twice is harmless). When the stored cursor is older than
the feed's retention (OUT_OF_RANGE, CURSOR_EXPIRED) it takes the head's cursor first,
then asks the service to resynchronise (typically: ``CheckErasure`` over the users it
holds) and follows from that cursor, so a change committed during the resync is not
lost. Each stream lasts at most ``stream_s`` (a call without a deadline would get the
channel's short default one) and then reconnects at once; a lost connection is retried
with backoff; shutdown ends the stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.workers import WorkerContext

logger = logging.getLogger(__name__)

ChangeHandler = Callable[[Sequence[resources_pb2.Change]], Awaitable[None]]
Resync = Callable[[], Awaitable[None]]


class CursorStore(Protocol):
    """Where a follower keeps its place (the service's own database, in production)."""

    async def load(self) -> str | None:
        """The stored cursor, or None before the first change."""
        ...

    async def save(self, cursor: str | None) -> None:
        """Store the cursor (None: forget it, follow from the head next time)."""
        ...


class MemoryCursorStore:
    """A cursor kept in memory (tests, tools)."""

    def __init__(self, cursor: str | None = None) -> None:
        self.cursor = cursor

    async def load(self) -> str | None:
        """The cursor."""
        return self.cursor

    async def save(self, cursor: str | None) -> None:
        """Keep it."""
        self.cursor = cursor


@dataclass(frozen=True, slots=True)
class FollowerSettings:
    """What to follow and how to retry."""

    app_id: str = ""  # "" follows every app (needs an all-apps grant)
    kinds: tuple[resources_pb2.ChangeKind.ValueType, ...] = ()
    batch: int = 500
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    # Without a stored cursor: start at the head (the service holds nothing an older
    # change could concern) or at the oldest change the feed still holds.
    start_at_head: bool = True
    # The deadline of one WatchChanges stream; reaching it is a planned reconnect.
    stream_s: float = 300.0


class ConsentFeedFollower:
    """Reads consent's change feed into a handler; its :meth:`run` is a worker body."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        store: CursorStore,
        handle: ChangeHandler,
        *,
        resync: Resync,
        settings: FollowerSettings = FollowerSettings(),
    ) -> None:
        self._stub = consent_pb2_grpc.ConsentServiceStub(channel)
        self._store = store
        self._handle = handle
        self._resync = resync
        self._settings = settings

    async def run(self, ctx: WorkerContext) -> None:
        """Follow until the app stops; reconnect with backoff after failures."""
        backoff = self._settings.initial_backoff_s
        while True:
            try:
                progressed = await self._follow_once(ctx)
            except grpc.aio.AioRpcError as error:
                progressed = False
                if not ctx.stopping:
                    logger.warning(
                        "consent feed unavailable; retrying",
                        extra={"code": error.code().name, "backoff_s": backoff},
                    )
            if progressed:
                backoff = self._settings.initial_backoff_s
            if await ctx.sleep(backoff):  # at once when the app is stopping
                return
            backoff = min(backoff * 2, self._settings.max_backoff_s)

    async def _follow_once(self, ctx: WorkerContext) -> bool:
        """One stream from the stored cursor until it ends or reaches its deadline (or a
        resynchronisation when the cursor expired); whether it got anywhere."""
        cursor = await self._store.load()
        request = messages_pb2.WatchChangesRequest(
            app_id=self._settings.app_id,
            cursor=cursor or "",
            kinds=self._settings.kinds,
            max_batch_size=self._settings.batch,
            from_head=cursor is None and self._settings.start_at_head,
        )
        call = self._stub.WatchChanges(request, timeout=self._settings.stream_s)
        stopper = asyncio.ensure_future(ctx.wait_stopping())
        stopper.add_done_callback(lambda _: call.cancel())
        progressed = False
        try:
            async for message in call:
                if message.changes:
                    await self._handle(message.changes)
                    progressed = True
                if message.cursor and message.cursor != cursor:
                    cursor = message.cursor
                    await self._store.save(cursor)
        except asyncio.CancelledError:
            if ctx.stopping:
                return progressed
            raise
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return True  # the stream's planned end
            if error.code() != grpc.StatusCode.OUT_OF_RANGE or ctx.stopping:
                raise
            logger.warning("consent feed cursor expired; resynchronising")
            await self._resynchronise()
            return True
        finally:
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stopper
        return progressed

    async def _resynchronise(self) -> None:
        """Take the head's cursor, let the service resynchronise, then store that cursor:
        a change committed meanwhile comes on the feed after it."""
        call = self._stub.WatchChanges(
            messages_pb2.WatchChangesRequest(
                app_id=self._settings.app_id,
                kinds=self._settings.kinds,
                from_head=True,
                stop_at_head=True,
            ),
            timeout=self._settings.stream_s,
        )
        head = None
        try:
            async for message in call:
                head = message.cursor or None
                break
        finally:
            call.cancel()
        await self._resync()
        await self._store.save(head)
