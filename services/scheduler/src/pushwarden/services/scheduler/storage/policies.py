"""The stored policy of each app (``policies``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.scheduler.models import PolicyRow


class PolicyRepository:
    """Read and replace an app's stored policy bytes and version."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, app_id: str) -> PolicyRow | None:
        """The app's row, or None when the policy was never set."""
        return await self._session.get(PolicyRow, app_id)

    async def get_for_update(self, app_id: str) -> PolicyRow | None:
        """The app's row, locked until the transaction ends (``FOR UPDATE`` on
        PostgreSQL; a SQLite write transaction holds the database's write lock already),
        so a read-check-write of the version cannot interleave with another."""
        return await self._session.get(PolicyRow, app_id, with_for_update=True)

    async def version(self, app_id: str) -> int | None:
        """The stored version alone (no policy bytes), or None when never set."""
        found = await self._session.execute(
            select(PolicyRow.version).where(PolicyRow.app_id == app_id)
        )
        return found.scalar_one_or_none()

    async def put(self, app_id: str, policy: bytes, version: int, now: datetime) -> None:
        """Store the policy as ``version``."""
        row = await self._session.get(PolicyRow, app_id)
        if row is None:
            self._session.add(
                PolicyRow(app_id=app_id, policy=policy, version=version, updated_at=now)
            )
        else:
            row.policy, row.version, row.updated_at = policy, version, now
        await self._session.flush()
