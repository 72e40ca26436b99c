"""Named values the service keeps for itself (``service_state``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.delivery.models import ServiceStateRow


class ServiceStateRepository:
    """Get, set and forget small named values."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, name: str) -> str | None:
        """The value, or None."""
        row = await self._session.get(ServiceStateRow, name)
        return None if row is None else row.value

    async def put(self, name: str, value: str | None) -> None:
        """Set the value (None forgets it)."""
        row = await self._session.get(ServiceStateRow, name)
        if value is None:
            if row is not None:
                await self._session.delete(row)
        elif row is None:
            self._session.add(ServiceStateRow(name=name, value=value))
        else:
            row.value = value
        await self._session.flush()
