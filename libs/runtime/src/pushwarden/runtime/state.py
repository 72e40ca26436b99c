"""Small named values a service keeps for itself in its own ``service_state`` table
(feed cursors, sequence counters, retention watermarks), and a feed follower's cursor
kept there.

Each service maps the table in its own metadata (its column sizes are its own); the
repository takes that mapped class.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession


class StateRow(Protocol):
    """A service's mapped ``service_state`` row: ``name`` (primary key) and ``value``."""

    name: str
    value: str

    def __init__(self, *, name: str, value: str) -> None: ...


RowT = TypeVar("RowT", bound=StateRow)


class ServiceStateRepository(Generic[RowT]):
    """Get, set and forget small named values on a unit of work's session."""

    def __init__(self, session: AsyncSession, row: type[RowT]) -> None:
        self._session = session
        self._row = row

    async def get(self, name: str) -> str | None:
        """The value, or None."""
        row = await self._session.get(self._row, name)
        return None if row is None else row.value

    async def put(self, name: str, value: str | None) -> None:
        """Set the value (None forgets it)."""
        row = await self._session.get(self._row, name)
        if value is None:
            if row is not None:
                await self._session.delete(row)
        elif row is None:
            self._session.add(self._row(name=name, value=value))
        else:
            row.value = value
        await self._session.flush()


class StateWork(Protocol):
    """A unit of work with the service's state repository on it."""

    @property
    def state(self) -> ServiceStateRepository[Any]:
        """The ``service_state`` repository."""
        ...

    async def commit(self) -> None:
        """Make the work durable."""
        ...


class StateUow(Protocol):
    """Opens units of work (a service's ``UnitOfWorkFactory``)."""

    def __call__(
        self, *, read_only: bool = False, snapshot: bool = False
    ) -> AbstractAsyncContextManager[StateWork]:
        """A unit of work, rolled back unless committed."""
        ...


class StateCursorStore:
    """A feed follower's cursor (:class:`pushwarden.runtime.follower.CursorStore`) kept
    under ``name`` in the service's ``service_state``."""

    def __init__(self, uow: StateUow, name: str) -> None:
        self._uow = uow
        self.name = name

    async def load(self) -> str | None:
        """The stored cursor, or None."""
        async with self._uow(read_only=True) as work:
            return await work.state.get(self.name)

    async def save(self, cursor: str | None) -> None:
        """Store the cursor (None forgets it)."""
        async with self._uow() as work:
            await work.state.put(self.name, cursor)
            await work.commit()
