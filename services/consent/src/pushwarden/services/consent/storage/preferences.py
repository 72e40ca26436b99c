"""The preferences repository (the contract's Preferences message, minus topics)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.consent.v1 import resources_pb2
from pushwarden.services.consent.models import PreferencesRow
from pushwarden.services.consent.storage.batches import in_batch

_P = PreferencesRow
_OF_USERS = select(_P.user_id, _P.document).where(
    _P.app_id == bindparam("app_id"), in_batch(_P.user_id, "user_ids")
)


def _parse(row: PreferencesRow) -> resources_pb2.Preferences:
    preferences = resources_pb2.Preferences.FromString(row.document)
    preferences.updated_at.FromDatetime(row.updated_at)
    return preferences


class PreferencesRepository:
    """The ``preferences`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, app_id: str, user_id: str) -> resources_pb2.Preferences | None:
        """A user's stored preferences (without topics), or None."""
        row = await self._session.get(PreferencesRow, (app_id, user_id))
        return None if row is None else _parse(row)

    async def of_users(
        self, app_id: str, user_ids: Sequence[str]
    ) -> dict[str, resources_pb2.Preferences]:
        """Many users' stored preferences, in one query (through the session's
        connection: this runs for every eligibility batch), without ``updated_at``
        (which eligibility never answers)."""
        connection = await self._session.connection()
        result = await connection.execute(_OF_USERS, {"app_id": app_id, "user_ids": user_ids})
        parse = resources_pb2.Preferences.FromString
        return {user_id: parse(document) for user_id, document in result.all()}

    async def put(
        self, app_id: str, user_id: str, document: resources_pb2.Preferences, now: datetime
    ) -> None:
        """Store a user's preferences (without topics)."""
        body = document.SerializeToString(deterministic=True)
        row = await self._session.get(PreferencesRow, (app_id, user_id))
        if row is None:
            self._session.add(
                PreferencesRow(app_id=app_id, user_id=user_id, document=body, updated_at=now)
            )
        else:
            row.document = body
            row.updated_at = now
        await self._session.flush()

    async def delete_user(self, app_id: str, user_id: str) -> int:
        """Erasure."""
        result = await self._session.execute(
            delete(PreferencesRow).where(
                PreferencesRow.app_id == app_id, PreferencesRow.user_id == user_id
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
