"""A service's ``service_state`` values and a follower's cursor kept there, on SQLite and
PostgreSQL: set, replace, forget, and nothing kept that was not committed."""

from __future__ import annotations

from sqlalchemy import Engine, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import (
    Database,
    UnitOfWork,
    UnitOfWorkFactory,
    conventional_metadata,
    create_async_engine_for,
)
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.runtime.state import ServiceStateRepository, StateCursorStore


class Base(DeclarativeBase):
    metadata = conventional_metadata()


class StateRow(Base):
    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Work(UnitOfWork):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.state = ServiceStateRepository(session, StateRow)


async def test_values_and_a_cursor_are_set_replaced_and_forgotten(
    database_engine: Engine, database_settings: DatabaseSettings
) -> None:
    Base.metadata.create_all(database_engine)
    database = Database(create_async_engine_for(database_settings))
    uow = UnitOfWorkFactory(database, Work)
    try:
        store = StateCursorStore(uow, "consent_feed_cursor")
        assert await store.load() is None
        await store.save("c1")
        await store.save("c2")
        assert await store.load() == "c2"
        async with uow() as work:
            await work.state.put("watermark", "7")  # not committed: rolled back
        async with uow(read_only=True) as work:
            assert await work.state.get("watermark") is None
            assert await work.state.get("consent_feed_cursor") == "c2"
        await store.save(None)
        assert await store.load() is None
        await store.save(None)  # forgetting nothing is fine
        assert await store.load() is None
    finally:
        await database.dispose()
