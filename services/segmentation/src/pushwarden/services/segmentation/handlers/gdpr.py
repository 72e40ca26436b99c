"""GDPR: export everything segmentation holds about a user, and erase users when
consent says so.

Erasure follows consent's change feed (``WatchChanges``, ERASED changes only) from a
cursor stored in this database; each batch's deletions and the new cursor commit
together, so a restart neither skips nor repeats an erasure. When the stored cursor is
older than consent's retention (CURSOR_EXPIRED) the follower takes the head's cursor
first, then asks ``CheckErasure`` about every user it holds anything for and erases
those erased, so nothing erased in the gap survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

import grpc

from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2
from pushwarden.runtime.workers import WorkerContext
from pushwarden.services.segmentation.domain.values import Value
from pushwarden.services.segmentation.handlers.common import SegmentationDeps
from pushwarden.services.segmentation.storage.events import StoredEvent
from pushwarden.services.segmentation.storage.profiles import StoredProfile
from pushwarden.services.segmentation.storage.uow import SegmentationUnitOfWork

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub

logger = logging.getLogger(__name__)

CONSENT_CURSOR: Final = "consent_feed_cursor"
RESYNC_BATCH: Final = 1000
STREAM_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Export:
    """One page of a user's data."""

    profile: StoredProfile | None
    attributes: dict[str, Value]
    events: list[StoredEvent]
    list_ids: list[str]
    exported_at: datetime
    next_after: tuple[datetime, int] | None


async def erase(work: SegmentationUnitOfWork, app_id: str, user_id: str) -> None:
    """Delete the user's profile (attributes, tombstones, list items), events (with
    their properties) and list memberships."""
    await work.profiles.delete_user(app_id, user_id)
    await work.events.delete_user(app_id, user_id)
    await work.lists.delete_user(app_id, user_id)


class GdprHandlers:
    """ExportUserData and the erasure follower."""

    def __init__(
        self, deps: SegmentationDeps, consent: ConsentServiceAsyncStub, poll_s: float
    ) -> None:
        self._deps = deps
        self._consent = consent
        self._poll_s = poll_s

    async def export(
        self, app_id: str, user_id: str, after: tuple[datetime, int] | None, size: int
    ) -> Export:
        """The profile and list memberships in full, a page of events oldest first."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            profile = (await work.profiles.get_many(app_id, [user_id])).get(user_id)
            stored = (await work.profiles.attributes_of(app_id, [user_id])).get(user_id, {})
            events = await work.events.page_of_user(app_id, user_id, after, size + 1)
            list_ids = await work.lists.lists_of_user(app_id, user_id)
        page = events[:size]
        last = page[-1] if len(events) > size and page else None
        return Export(
            profile=profile,
            attributes={
                name: item.value for name, item in sorted(stored.items()) if item.value is not None
            },
            events=page,
            list_ids=list_ids,
            exported_at=self._deps.clock.now(),
            next_after=(last.occurred_at, last.sequence) if last is not None else None,
        )

    async def erase_users(self, users: Sequence[tuple[str, str]], cursor: str | None) -> None:
        """Erase the users and store the consent cursor in one transaction."""
        async with self._deps.uow() as work:
            for app_id, user_id in users:
                await erase(work, app_id, user_id)
            if cursor is not None:
                await work.state.put(CONSENT_CURSOR, cursor)
            await work.commit()

    async def follow_once(self) -> None:
        """Read consent's feed from the stored cursor to its head, erasing as told."""
        async with self._deps.uow(read_only=True) as work:
            cursor = await work.state.get(CONSENT_CURSOR) or ""
        try:
            await self._read(cursor)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.OUT_OF_RANGE:
                raise
            logger.warning("consent feed cursor expired; resynchronising with CheckErasure")
            await self.resync()

    async def _read(self, cursor: str) -> None:
        request = consent_messages.WatchChangesRequest(
            cursor=cursor, kinds=[resources_pb2.CHANGE_KIND_ERASED], stop_at_head=True
        )
        async for message in self._consent.WatchChanges(request, timeout=STREAM_TIMEOUT_S):
            erased = [
                (change.app_id, change.user_id)
                for change in message.changes
                if change.kind == resources_pb2.CHANGE_KIND_ERASED and change.user_id
            ]
            await self.erase_users(erased, message.cursor)

    async def resync(self) -> None:
        """Take the head's cursor, then erase every held user CheckErasure says was
        erased; later erasures arrive on the feed after that cursor."""
        head = self._consent.WatchChanges(
            consent_messages.WatchChangesRequest(from_head=True, stop_at_head=True),
            timeout=STREAM_TIMEOUT_S,
        )
        cursor = ""
        async for message in head:
            cursor = message.cursor
            break
        head.cancel()
        after: tuple[str, str] | None = None
        while True:
            async with self._deps.uow(read_only=True) as work:
                held = await work.profiles.users_after(after, RESYNC_BATCH)
            if not held:
                break
            after = held[-1]
            by_app: dict[str, list[str]] = {}
            for app_id, user_id in held:
                by_app.setdefault(app_id, []).append(user_id)
            erased: list[tuple[str, str]] = []
            for app_id, users in by_app.items():
                reply = await self._consent.CheckErasure(
                    consent_messages.CheckErasureRequest(app_id=app_id, user_ids=users)
                )
                erased += [(app_id, u.user_id) for u in reply.users if u.HasField("erased_at")]
            await self.erase_users(erased, None)
        await self.erase_users([], cursor)

    async def erasure_worker(self, ctx: WorkerContext) -> None:
        """The hosted worker: follow consent's feed every ``poll_s``; an unreachable
        consent is retried quietly. Shutdown cuts a read short (its transaction rolls
        back; the stored cursor still says where to resume)."""
        while not ctx.stopping:
            follow = asyncio.ensure_future(self.follow_once())
            stopping = asyncio.ensure_future(ctx.wait_stopping())
            await asyncio.wait({follow, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not follow.done():
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
                return
            try:
                follow.result()
            except grpc.aio.AioRpcError as error:
                if error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                logger.info("consent unreachable for erasure: %s", error.details())
            if await ctx.sleep(self._poll_s):
                return
