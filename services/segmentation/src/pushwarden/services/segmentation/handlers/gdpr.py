"""GDPR: export everything segmentation holds about a user, and erase users when
consent says so.

Erasure follows consent's change feed (``WatchChanges``, ERASED changes only) with the
runtime's :class:`~pushwarden.runtime.follower.ConsentFeedFollower`, from a cursor
stored in this database's ``service_state`` (on the very first start from the oldest
change consent still holds). A batch's cursor is stored after its deletions committed,
so a crash between the two repeats the deletions, which is harmless. When the stored
cursor is older than consent's retention (CURSOR_EXPIRED) the follower takes the head's
cursor first, then :meth:`ErasureHandlers.resync` asks ``CheckErasure`` about every user
segmentation holds anything for and erases those erased, so nothing erased in the gap
survives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from pushwarden.consent.v1 import messages_pb2 as consent_messages
from pushwarden.consent.v1 import resources_pb2
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
    """ExportUserData."""

    def __init__(self, deps: SegmentationDeps) -> None:
        self._deps = deps

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


class ErasureHandlers:
    """What the consent feed follower calls."""

    def __init__(self, deps: SegmentationDeps, consent: ConsentServiceAsyncStub) -> None:
        self._deps = deps
        self._consent = consent

    async def erase_users(self, users: Sequence[tuple[str, str]]) -> None:
        """Erase the users in one transaction."""
        if not users:
            return
        async with self._deps.uow() as work:
            for app_id, user_id in users:
                await erase(work, app_id, user_id)
            await work.commit()
        logger.info("erased users", extra={"users": len(users)})

    async def on_changes(self, changes: Sequence[resources_pb2.Change]) -> None:
        """Erase every user a batch of the feed says consent erased."""
        await self.erase_users(
            [
                (change.app_id, change.user_id)
                for change in changes
                if change.kind == resources_pb2.CHANGE_KIND_ERASED and change.user_id
            ]
        )

    async def resync(self) -> None:
        """After a lost cursor: erase every held user CheckErasure says was erased."""
        after: tuple[str, str] | None = None
        while True:
            async with self._deps.uow(read_only=True) as work:
                held = await work.profiles.users_after(after, RESYNC_BATCH)
            if not held:
                return
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
            await self.erase_users(erased)
