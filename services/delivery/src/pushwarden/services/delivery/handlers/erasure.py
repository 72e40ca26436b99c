"""Erasure: consent's change feed says ERASED, delivery deletes what it holds of the user.

The follower (``pushwarden.runtime.follower``) hands over batches of ERASED changes
at least once, in commit order, and stores its cursor in ``service_state`` only after
a batch was handled; deleting a user's rows twice is harmless. Rows accepted after the
erasure (the user came back) are kept. When the stored cursor has outlived the feed's
retention, every user delivery holds is checked with ``CheckErasure`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC

from pushwarden.consent.v1 import resources_pb2
from pushwarden.services.delivery.handlers.common import DeliveryDeps

logger = logging.getLogger(__name__)

CURSOR_NAME = "consent_feed_cursor"
RESYNC_BATCH = 1000


class ErasureHandlers:
    """What the consent feed follower calls."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self._deps = deps

    async def load(self) -> str | None:
        """The stored feed cursor (a follower's CursorStore)."""
        async with self._deps.uow(read_only=True) as work:
            return await work.state.get(CURSOR_NAME)

    async def save(self, cursor: str | None) -> None:
        """Store the feed cursor."""
        async with self._deps.uow() as work:
            await work.state.put(CURSOR_NAME, cursor)
            await work.commit()

    async def on_changes(self, changes: Sequence[resources_pb2.Change]) -> None:
        """Delete every erased user's sends, devices and attempts from before the erasure."""
        erased = [c for c in changes if c.kind == resources_pb2.CHANGE_KIND_ERASED and c.user_id]
        if not erased:
            return
        async with self._deps.uow() as work:
            removed = 0
            for change in erased:
                removed += await work.sends.erase_user(
                    change.app_id, change.user_id, change.committed_at.ToDatetime(UTC)
                )
            await work.commit()
        logger.info("erased users", extra={"users": len(erased), "sends": removed})

    async def resync(self) -> None:
        """After a lost cursor: ask consent about every user delivery holds, erase those
        erased since their rows were written."""
        after = ("", "")
        while True:
            async with self._deps.uow(read_only=True) as work:
                pairs = await work.sends.users_after(None, after, RESYNC_BATCH)
            if not pairs:
                return
            by_app: dict[str, list[str]] = {}
            for app_id, user_id in pairs:
                by_app.setdefault(app_id, []).append(user_id)
            for app_id, users in by_app.items():
                erasures = await self._deps.consent.erasures(app_id, users)
                async with self._deps.uow() as work:
                    for user_id, erased_at in erasures.items():
                        await work.sends.erase_user(app_id, user_id, erased_at)
                    await work.commit()
            after = pairs[-1]
