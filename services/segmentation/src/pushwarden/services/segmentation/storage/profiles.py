"""The profiles repository: profiles, their typed attributes (tombstones included) and
the items of string-list attributes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.segmentation.domain.values import Value
from pushwarden.services.segmentation.models import (
    EventRow,
    ListMemberRow,
    ProfileAttributeItemRow,
    ProfileAttributeRow,
    ProfileRow,
)
from pushwarden.services.segmentation.storage.common import chunks, insert_rows, upsert_rows

REMOVED = "REMOVED"


@dataclass(frozen=True, slots=True)
class StoredAttribute:
    """An attribute's latest write: its value, or None for a removal (tombstone)."""

    value: Value | None
    written_at: datetime


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """A profile's bookkeeping."""

    user_id: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AttributeWrite:
    """One attribute to store: a value, or a removal (None)."""

    user_id: str
    name: str
    value: Value | None
    written_at: datetime


def _stored(row: ProfileAttributeRow) -> StoredAttribute:
    if row.kind == REMOVED:
        return StoredAttribute(None, row.written_at)
    value = Value.from_columns(
        row.kind, row.string_value, row.number_value, row.bool_value, row.timestamp_value
    )
    return StoredAttribute(value, row.written_at)


class ProfileRepository:
    """Profiles of every app, keyed by (app, user)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def lock_or_create(
        self, app_id: str, user_ids: Sequence[str], now: datetime
    ) -> dict[str, StoredProfile]:
        """Create the missing profiles and lock every one of them (in id order, so two
        batches never deadlock) until the transaction ends; the profiles before this call
        (missing ones are absent)."""
        before = await self.get_many(app_id, user_ids)
        missing = [u for u in user_ids if u not in before]
        rows = [
            {"app_id": app_id, "user_id": u, "created_at": now, "updated_at": now} for u in missing
        ]
        for chunk in chunks(rows):
            await insert_ignoring_duplicates(self._session, ProfileRow, chunk)
        for chunk in chunks(sorted(user_ids)):
            await self._session.execute(
                select(ProfileRow.user_id)
                .where(ProfileRow.app_id == app_id, ProfileRow.user_id.in_(chunk))
                .order_by(ProfileRow.user_id)
                .with_for_update()
            )
        return before

    async def get_many(self, app_id: str, user_ids: Sequence[str]) -> dict[str, StoredProfile]:
        """The profiles among ``user_ids`` that exist."""
        found: dict[str, StoredProfile] = {}
        for chunk in chunks(list(user_ids)):
            rows = await self._session.scalars(
                select(ProfileRow).where(ProfileRow.app_id == app_id, ProfileRow.user_id.in_(chunk))
            )
            for row in rows:
                found[row.user_id] = StoredProfile(row.user_id, row.created_at, row.updated_at)
        return found

    async def attributes_of(
        self, app_id: str, user_ids: Sequence[str]
    ) -> dict[str, dict[str, StoredAttribute]]:
        """Every stored attribute (tombstones included) of the users, by user and name."""
        found: dict[str, dict[str, StoredAttribute]] = defaultdict(dict)
        for chunk in chunks(list(user_ids)):
            rows = await self._session.scalars(
                select(ProfileAttributeRow).where(
                    ProfileAttributeRow.app_id == app_id,
                    ProfileAttributeRow.user_id.in_(chunk),
                )
            )
            for row in rows:
                found[row.user_id][row.name] = _stored(row)
        return found

    async def write(self, app_id: str, writes: Sequence[AttributeWrite]) -> None:
        """Store values and tombstones; string-list items follow the value."""
        if not writes:
            return
        empty = {
            "kind": REMOVED,
            "string_value": None,
            "number_value": None,
            "bool_value": None,
            "timestamp_value": None,
        }
        rows: list[Mapping[str, Any]] = [
            {
                "app_id": app_id,
                "user_id": w.user_id,
                "name": w.name,
                **(w.value.columns() if w.value is not None else empty),
                "written_at": w.written_at,
            }
            for w in writes
        ]
        await upsert_rows(self._session, ProfileAttributeRow, rows, ("app_id", "user_id", "name"))
        keys = [(w.user_id, w.name) for w in writes]
        for chunk in chunks(keys):
            await self._session.execute(
                delete(ProfileAttributeItemRow).where(
                    ProfileAttributeItemRow.app_id == app_id,
                    tuple_(ProfileAttributeItemRow.user_id, ProfileAttributeItemRow.name).in_(
                        list(chunk)
                    ),
                )
            )
        items = [
            {
                "app_id": app_id,
                "user_id": w.user_id,
                "name": w.name,
                "position": position,
                "value": item,
            }
            for w in writes
            if w.value is not None
            for position, item in enumerate(w.value.items())
        ]
        await insert_rows(self._session, ProfileAttributeItemRow, items)

    async def touch(self, app_id: str, user_ids: Sequence[str], now: datetime) -> None:
        """Mark the profiles updated at ``now``."""
        for chunk in chunks(list(user_ids)):
            await self._session.execute(
                update(ProfileRow)
                .where(ProfileRow.app_id == app_id, ProfileRow.user_id.in_(chunk))
                .values(updated_at=now)
            )

    async def delete_user(self, app_id: str, user_id: str) -> None:
        """Erasure: the profile, its attributes and tombstones, its list items."""
        for table in (ProfileAttributeItemRow, ProfileAttributeRow, ProfileRow):
            await self._session.execute(
                delete(table).where(table.app_id == app_id, table.user_id == user_id)
            )

    async def delete_profiles(self, app_id: str, user_ids: Sequence[str]) -> None:
        """Delete profiles this transaction created for nothing (a rejected update)."""
        for chunk in chunks(list(user_ids)):
            await self._session.execute(
                delete(ProfileRow).where(ProfileRow.app_id == app_id, ProfileRow.user_id.in_(chunk))
            )

    async def users_after(self, after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
        """Every (app, user) segmentation holds anything for (a profile, an event or a
        list membership row), in order after ``after``: what an erasure resync checks."""
        branches = [
            select(table.app_id.label("app_id"), table.user_id.label("user_id"))
            for table in (ProfileRow, EventRow, ListMemberRow)
        ]
        known = branches[0].union(*branches[1:]).subquery("known")
        query = select(known.c.app_id, known.c.user_id)
        if after is not None:
            query = query.where(tuple_(known.c.app_id, known.c.user_id) > tuple_(*after))
        rows = await self._session.execute(
            query.order_by(known.c.app_id, known.c.user_id).limit(limit)
        )
        return [(app_id, user_id) for app_id, user_id in rows]
