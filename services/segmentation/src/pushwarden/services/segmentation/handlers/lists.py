"""Static lists: create (idempotent by id or key), list, add and remove members (last
write wins per user by ``client_time``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from pushwarden.runtime.errors import NotFound
from pushwarden.services.segmentation.domain.lists import ListKind, ListSpec, StaticList
from pushwarden.services.segmentation.handlers.common import (
    SegmentationDeps,
    id_taken,
    key_reused,
    new_id,
    request_digest,
)
from pushwarden.services.segmentation.storage.lists import MembershipCounts


@dataclass(frozen=True, slots=True)
class Created:
    """What CreateList did."""

    list: StaticList
    replayed: bool


class ListHandlers:
    """The list use cases."""

    def __init__(self, deps: SegmentationDeps) -> None:
        self._deps = deps

    async def create(self, spec: ListSpec, key: str) -> Created:
        """Create a list. The same id (or, without one, the same key) with the same
        definition replays the first result; with another definition it is
        ALREADY_EXISTS (ID_TAKEN, IDEMPOTENCY_KEY_REUSED)."""
        digest = request_digest(spec.definition())
        async with self._deps.uow() as work:
            now = self._deps.clock.now()
            if spec.list_id:
                stored = await work.lists.get(spec.app_id, spec.list_id)
                if stored is None and await work.lists.insert(spec, key or None, digest, now):
                    created = await work.lists.get(spec.app_id, spec.list_id)
                    await work.commit()
                    assert created is not None
                    return Created(created.list, replayed=False)
                stored = stored or await work.lists.get(spec.app_id, spec.list_id)
                if stored is None or stored.request_digest != digest:
                    raise id_taken("list", spec.list_id)
                return Created(stored.list, replayed=True)
            if key:
                stored = await work.lists.by_key(spec.app_id, key)
                if stored is not None:
                    if stored.request_digest != digest:
                        raise key_reused(key)
                    return Created(stored.list, replayed=True)
            assigned = replace(spec, list_id=new_id("lst"))
            if not await work.lists.insert(assigned, key or None, digest, now):
                # A concurrent call with the same key won: replay it if it was this one.
                winner = await work.lists.by_key(spec.app_id, key)
                if winner is not None and winner.request_digest == digest:
                    return Created(winner.list, replayed=True)
                raise key_reused(key)
            created = await work.lists.get(spec.app_id, assigned.list_id)
            await work.commit()
            assert created is not None
            return Created(created.list, replayed=False)

    async def page(
        self, app_id: str, kind: ListKind | None, after: str | None, size: int
    ) -> tuple[list[StaticList], str | None]:
        """A page of the app's lists and the id the next page starts after (None: last)."""
        async with self._deps.uow(read_only=True, snapshot=True) as work:
            found = await work.lists.page(app_id, kind, after, size + 1)
        page = found[:size]
        return page, page[-1].list_id if len(found) > size and page else None

    async def set_membership(
        self,
        app_id: str,
        list_id: str,
        user_ids: Sequence[str],
        present: bool,
        client_time: datetime | None,
    ) -> MembershipCounts:
        """Add or remove users (NOT_FOUND for an unknown list)."""
        async with self._deps.uow() as work:
            at = client_time or self._deps.clock.now()
            if await work.lists.get(app_id, list_id) is None:
                raise NotFound(
                    f"list {list_id!r} does not exist",
                    resource_type="list",
                    resource_name=list_id,
                )
            counts = await work.lists.set_membership(app_id, list_id, user_ids, present, at)
            await work.commit()
        return counts
