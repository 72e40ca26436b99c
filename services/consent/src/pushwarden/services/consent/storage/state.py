"""Named values the service keeps for itself (``service_state``)."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.consent.models import ServiceStateRow


class ServiceStateRepository:
    """Get and set small named values."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> str | None:
        """The value, or None."""
        row = await self._session.get(ServiceStateRow, name)
        return None if row is None else row.value

    async def put(self, name: str, value: str) -> None:
        """Set the value."""
        row = await self._session.get(ServiceStateRow, name)
        if row is None:
            self._session.add(ServiceStateRow(name=name, value=value))
        else:
            row.value = value
        await self._session.flush()


PSEUDONYM_KEY_NAME = "pseudonym_key"


def local_pseudonym_key(settings: DatabaseSettings) -> str:
    """The pseudonym key this SQLite database made for itself on its first start (only
    when no key is configured; PostgreSQL deployments must configure one). Runs at start,
    synchronously, like the migrations."""
    engine = create_engine_for(settings, sqlite_begin="IMMEDIATE")
    try:
        with engine.begin() as connection:
            value = connection.execute(
                select(ServiceStateRow.value).where(ServiceStateRow.name == PSEUDONYM_KEY_NAME)
            ).scalar()
            if value is None:
                value = secrets.token_hex(32)
                connection.execute(
                    insert(ServiceStateRow).values(name=PSEUDONYM_KEY_NAME, value=value)
                )
            return str(value)
    finally:
        engine.dispose()
