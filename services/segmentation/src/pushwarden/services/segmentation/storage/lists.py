"""The lists repository: static lists and their members (last write wins per user)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.segmentation.domain.lists import ListKind, ListSpec, StaticList
from pushwarden.services.segmentation.models import ListMemberRow, ListRow
from pushwarden.services.segmentation.storage.common import chunks, upsert_rows


@dataclass(frozen=True, slots=True)
class StoredList:
    """A list row with the digest of the request that created it."""

    list: StaticList
    request_digest: str


@dataclass(frozen=True, slots=True)
class MembershipCounts:
    """What a bulk add or removal did."""

    changed: int
    unchanged: int
    superseded: int


class ListRepository:
    """Lists of every app, keyed by (app, list id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _counts(self, app_id: str, list_ids: Sequence[str]) -> dict[str, int]:
        if not list_ids:
            return {}
        rows = await self._session.execute(
            select(ListMemberRow.list_id, func.count())
            .where(
                ListMemberRow.app_id == app_id,
                ListMemberRow.list_id.in_(list(list_ids)),
                ListMemberRow.present.is_(True),
            )
            .group_by(ListMemberRow.list_id)
        )
        return {list_id: int(count) for list_id, count in rows}

    async def _lists(self, rows: Sequence[ListRow]) -> list[StoredList]:
        if not rows:
            return []
        counts = await self._counts(rows[0].app_id, [row.list_id for row in rows])
        return [
            StoredList(
                StaticList(
                    row.app_id,
                    row.list_id,
                    row.name,
                    row.description,
                    ListKind(row.kind),
                    row.created_at,
                    counts.get(row.list_id, 0),
                ),
                row.request_digest,
            )
            for row in rows
        ]

    async def get(self, app_id: str, list_id: str) -> StoredList | None:
        """One list, or None."""
        row = await self._session.get(ListRow, (app_id, list_id))
        return None if row is None else (await self._lists([row]))[0]

    async def by_key(self, app_id: str, key: str) -> StoredList | None:
        """The list created with this idempotency key, or None."""
        row = await self._session.scalar(
            select(ListRow).where(ListRow.app_id == app_id, ListRow.idempotency_key == key)
        )
        return None if row is None else (await self._lists([row]))[0]

    async def insert(self, spec: ListSpec, key: str | None, digest: str, now: datetime) -> bool:
        """Insert a new list; False when its id (or key) was taken concurrently."""
        values = {
            "app_id": spec.app_id,
            "list_id": spec.list_id,
            "name": spec.name,
            "description": spec.description,
            "kind": spec.kind.value,
            "created_at": now,
            "idempotency_key": key,
            "request_digest": digest,
        }
        return await insert_ignoring_duplicates(self._session, ListRow, [values]) == 1

    async def existing_ids(self, app_id: str, list_ids: Sequence[str]) -> set[str]:
        """The ids among ``list_ids`` the app has."""
        if not list_ids:
            return set()
        return set(
            await self._session.scalars(
                select(ListRow.list_id).where(
                    ListRow.app_id == app_id, ListRow.list_id.in_(list(list_ids))
                )
            )
        )

    async def suppression_ids(self, app_id: str) -> list[str]:
        """Every SUPPRESSION list of the app."""
        return list(
            await self._session.scalars(
                select(ListRow.list_id)
                .where(ListRow.app_id == app_id, ListRow.kind == ListKind.SUPPRESSION.value)
                .order_by(ListRow.list_id)
            )
        )

    async def page(
        self, app_id: str, kind: ListKind | None, after: str | None, limit: int
    ) -> list[StaticList]:
        """Up to ``limit`` lists of the app ordered by id, after ``after``."""
        query = select(ListRow).where(ListRow.app_id == app_id)
        if kind is not None:
            query = query.where(ListRow.kind == kind.value)
        if after is not None:
            query = query.where(ListRow.list_id > after)
        rows = list(await self._session.scalars(query.order_by(ListRow.list_id).limit(limit)))
        return [stored.list for stored in await self._lists(rows)]

    async def set_membership(
        self, app_id: str, list_id: str, user_ids: Sequence[str], present: bool, at: datetime
    ) -> MembershipCounts:
        """Add (``present``) or remove users, last write wins per user by ``at``: a user
        whose latest add or removal is newer is superseded. A removal of someone not on
        the list still records its time, so an older add arriving later loses."""
        changed = unchanged = superseded = 0
        writes: list[dict[str, object]] = []
        for chunk in chunks(list(user_ids)):
            rows = await self._session.execute(
                select(ListMemberRow.user_id, ListMemberRow.present, ListMemberRow.written_at)
                .where(
                    ListMemberRow.app_id == app_id,
                    ListMemberRow.list_id == list_id,
                    ListMemberRow.user_id.in_(chunk),
                )
                .with_for_update()
            )
            stored = {user: (was, when) for user, was, when in rows}
            for user_id in chunk:
                was, when = stored.get(user_id, (False, None))
                if when is not None and when > at:
                    superseded += 1
                    continue
                if was == present:
                    unchanged += 1
                else:
                    changed += 1
                writes.append(
                    {
                        "app_id": app_id,
                        "list_id": list_id,
                        "user_id": user_id,
                        "present": present,
                        "written_at": at,
                    }
                )
        await upsert_rows(self._session, ListMemberRow, writes, ("app_id", "list_id", "user_id"))
        return MembershipCounts(changed, unchanged, superseded)

    async def memberships(
        self, app_id: str, user_ids: Sequence[str], list_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        """(user, list) pairs of the users on the lists."""
        if not user_ids or not list_ids:
            return set()
        rows = await self._session.execute(
            select(ListMemberRow.user_id, ListMemberRow.list_id).where(
                ListMemberRow.app_id == app_id,
                ListMemberRow.user_id.in_(list(user_ids)),
                ListMemberRow.list_id.in_(list(list_ids)),
                ListMemberRow.present.is_(True),
            )
        )
        return {(user, list_id) for user, list_id in rows}

    async def lists_of_user(self, app_id: str, user_id: str) -> list[str]:
        """The lists a user is on."""
        return list(
            await self._session.scalars(
                select(ListMemberRow.list_id)
                .where(
                    ListMemberRow.app_id == app_id,
                    ListMemberRow.user_id == user_id,
                    ListMemberRow.present.is_(True),
                )
                .order_by(ListMemberRow.list_id)
            )
        )

    async def delete_user(self, app_id: str, user_id: str) -> None:
        """Erasure: every membership row (tombstones included) of the user."""
        await self._session.execute(
            delete(ListMemberRow).where(
                ListMemberRow.app_id == app_id, ListMemberRow.user_id == user_id
            )
        )
