"""Consent's change feed: ERASED makes delivery delete what it holds of the user (sends
with their devices and attempts, assignments, engagement, opt-outs); a marketing OPT_OUT
is kept (user, time) so that statistics can count opt-outs within 24 h after a send.

The follower (``pushwarden.runtime.follower``) hands over batches of ERASED changes
at least once, in commit order, and stores its cursor in ``service_state`` only after
a batch was handled; deleting a user's rows twice is harmless. Rows accepted after the
erasure (the user came back) are kept. Opt-outs are keyed by the feed's sequence, so a
replayed batch records nothing twice. When the stored cursor has outlived the feed's
retention, every user delivery holds is checked with ``CheckErasure`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import resources_pb2
from pushwarden.services.delivery.domain.sends import Kind
from pushwarden.services.delivery.handlers.common import DeliveryDeps
from pushwarden.services.delivery.storage.engagement import OptOut, users_after
from pushwarden.services.delivery.storage.uow import DeliveryUnitOfWork

logger = logging.getLogger(__name__)

CURSOR_NAME = "consent_feed_cursor"
RESYNC_BATCH = 1000
FOLLOWED_KINDS = (resources_pb2.CHANGE_KIND_ERASED, resources_pb2.CHANGE_KIND_CONSENT)

# Push is the channel delivery sends on; unset means every channel (ALL_MARKETING, and
# CATEGORY or TOPIC without a channel). An e-mail-only opt-out is no reaction to a push.
_PUSH_CHANNELS = (types_pb2.CHANNEL_UNSPECIFIED, types_pb2.CHANNEL_PUSH)
_SCOPES = {
    resources_pb2.CONSENT_SCOPE_KIND_ALL_MARKETING: "ALL_MARKETING",
    resources_pb2.CONSENT_SCOPE_KIND_CHANNEL: "CHANNEL",
    resources_pb2.CONSENT_SCOPE_KIND_CATEGORY: "CATEGORY",
    resources_pb2.CONSENT_SCOPE_KIND_TOPIC: "TOPIC",
}


async def erase_user(
    work: DeliveryUnitOfWork, app_id: str, user_id: str, before: datetime | None
) -> int:
    """Delete every row of the user written before ``before`` (all when None): sends
    (their devices and attempts cascade), assignments, engagement and opt-outs."""
    removed = await work.sends.erase_user(app_id, user_id, before)
    removed += await work.assignments.erase_user(app_id, user_id, before)
    removed += await work.engagement.erase_user(app_id, user_id, before)
    removed += await work.opt_outs.erase_user(app_id, user_id, before)
    return removed


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
        """Record the batch's marketing opt-outs, then delete every erased user's rows
        from before the erasure (an opt-out of the same batch included), in one
        transaction."""
        erased = [c for c in changes if c.kind == resources_pb2.CHANGE_KIND_ERASED and c.user_id]
        opt_outs = await self._opt_outs(changes)
        if not erased and not opt_outs:
            return
        async with self._deps.uow() as work:
            await work.opt_outs.insert_new(opt_outs)
            removed = 0
            for change in erased:
                removed += await erase_user(
                    work, change.app_id, change.user_id, change.committed_at.ToDatetime(UTC)
                )
            await work.commit()
        if erased:
            logger.info("erased users", extra={"users": len(erased), "rows": removed})

    async def _opt_outs(self, changes: Sequence[resources_pb2.Change]) -> list[OptOut]:
        """The marketing push opt-outs among ``changes``: every scope on the push channel
        (or every channel) but a category of transactional kind (kinds come from
        consent, cached; if consent cannot name them the batch fails and the follower
        replays it)."""
        found: list[tuple[resources_pb2.Change, str]] = []
        for change in changes:
            entry = change.consent
            if (
                change.kind != resources_pb2.CHANGE_KIND_CONSENT
                or not change.user_id
                or entry.action != resources_pb2.CONSENT_ACTION_OPT_OUT
                or entry.scope.kind not in _SCOPES
                or entry.scope.channel not in _PUSH_CHANNELS
            ):
                continue
            found.append((change, _SCOPES[entry.scope.kind]))
        categories: dict[str, set[str]] = {}
        for change, scope in found:
            if scope == "CATEGORY":
                categories.setdefault(change.app_id, set()).add(change.consent.scope.category_id)
        marketing: set[tuple[str, str]] = set()
        for app_id, category_ids in categories.items():
            kinds = await self._deps.consent.kinds(app_id, sorted(category_ids))
            marketing.update((app_id, c) for c, kind in kinds.items() if kind is Kind.MARKETING)
        return [
            OptOut(
                app_id=change.app_id,
                sequence=change.sequence,
                user_id=change.user_id,
                scope_kind=scope,
                opted_out_at=change.committed_at.ToDatetime(UTC),
            )
            for change, scope in found
            if scope != "CATEGORY" or (change.app_id, change.consent.scope.category_id) in marketing
        ]

    async def resync(self) -> None:
        """After a lost cursor: ask consent about every user delivery holds, erase those
        erased since their rows were written. (Opt-outs in the gap are not recovered:
        ``opt_outs_within_24h`` may undercount for that period.)"""
        after = ("", "")
        while True:
            async with self._deps.uow(read_only=True) as work:
                pairs = await users_after(work.session, after, RESYNC_BATCH)
            if not pairs:
                return
            by_app: dict[str, list[str]] = {}
            for app_id, user_id in pairs:
                by_app.setdefault(app_id, []).append(user_id)
            for app_id, users in by_app.items():
                erasures = await self._deps.consent.erasures(app_id, users)
                async with self._deps.uow() as work:
                    for user_id, erased_at in erasures.items():
                        await erase_user(work, app_id, user_id, erased_at)
                    await work.commit()
            after = pairs[-1]
