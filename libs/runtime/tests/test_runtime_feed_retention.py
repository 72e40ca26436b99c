"""A feed's retention cut-off (consent's WatchChanges, segmentation's StreamEvents), on
SQLite and PostgreSQL: where a stream starts, which rows the purge deletes, where it
puts the watermark, and which cursors it then refuses as CURSOR_EXPIRED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import DateTime, Engine, Integer, String, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import (
    Database,
    UnitOfWork,
    UnitOfWorkFactory,
    conventional_metadata,
    create_async_engine_for,
)
from pushwarden.runtime.errors import OutOfRange
from pushwarden.runtime.feed import FeedRetention, Watermarks
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.runtime.state import ServiceStateRepository

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
COUNTER = "sequence"
RETENTION = FeedRetention("purged_through", timedelta(days=7), "follow again from the head")


class Base(DeclarativeBase):
    metadata = conventional_metadata()


class StateRow(Base):
    __tablename__ = "service_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class ChangeRow(Base):
    __tablename__ = "changes"

    sequence: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[str] = mapped_column(String(64))
    stamped_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Log:
    """A feed table whose sequences come from a counter, like the services' feeds."""

    def __init__(self, session: AsyncSession, state: Watermarks) -> None:
        self._session = session
        self._state = state

    async def append(self, user_id: str, stamped_at: datetime) -> int:
        sequence = int(await self._state.get(COUNTER) or 0) + 1
        await self._state.put(COUNTER, str(sequence))
        self._session.add(ChangeRow(sequence=sequence, user_id=user_id, stamped_at=stamped_at))
        await self._session.flush()
        return sequence

    async def head(self) -> int:
        return int(await self._state.get(COUNTER) or 0)

    async def oldest(self) -> int | None:
        value = await self._session.scalar(select(func.min(ChangeRow.sequence)))
        return None if value is None else int(value)

    async def delete_before(self, instant: datetime) -> int:
        result = await self._session.execute(
            delete(ChangeRow).where(ChangeRow.stamped_at < instant)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_user(self, user_id: str) -> None:
        await self._session.execute(delete(ChangeRow).where(ChangeRow.user_id == user_id))

    async def sequences(self) -> list[int]:
        return list(await self._session.scalars(select(ChangeRow.sequence).order_by("sequence")))


class Work(UnitOfWork):
    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.state = ServiceStateRepository(session, StateRow)
        self.log = Log(session, self.state)


Uow = UnitOfWorkFactory[Work]


@pytest.fixture
async def uow(database_engine: Engine, database_settings: DatabaseSettings) -> AsyncIterator[Uow]:
    Base.metadata.create_all(database_engine)
    database = Database(create_async_engine_for(database_settings))
    try:
        yield UnitOfWorkFactory(database, Work)
    finally:
        await database.dispose()


async def append(uow: Uow, *rows: tuple[str, timedelta]) -> None:
    """Append changes stamped ``age`` before NOW."""
    async with uow() as work:
        for user_id, age in rows:
            await work.log.append(user_id, NOW - age)
        await work.commit()


async def purge(uow: Uow, now: datetime = NOW) -> int:
    async with uow() as work:
        purged = await RETENTION.purge(work.state, work.log, now, work.log.delete_before)
        await work.commit()
    return purged


async def start(uow: Uow, cursor: int | None, from_head: bool = False) -> int:
    async with uow(read_only=True) as work:
        return await RETENTION.start_sequence(work.state, work.log, cursor, from_head)


async def watermark(uow: Uow) -> str | None:
    async with uow(read_only=True) as work:
        return await work.state.get(RETENTION.watermark)


async def test_before_any_purge_every_cursor_is_valid(uow: Uow) -> None:
    assert await start(uow, None) == 0
    assert await start(uow, None, from_head=True) == 0
    await append(uow, ("u1", timedelta(days=1)), ("u2", timedelta(0)))
    assert await start(uow, None) == 0  # from the oldest change
    assert await start(uow, None, from_head=True) == 2
    assert await start(uow, 0) == 0
    assert await start(uow, 1, from_head=True) == 1  # a cursor wins over from_head
    assert await purge(uow) == 0
    assert await watermark(uow) is None


async def test_purge_deletes_expired_rows_and_expires_cursors_before_the_oldest_kept(
    uow: Uow,
) -> None:
    await append(
        uow,
        ("u1", timedelta(days=9)),
        ("u2", timedelta(days=8)),
        ("u3", timedelta(days=7)),  # exactly at the cut-off: kept
        ("u4", timedelta(days=1)),
    )
    assert await purge(uow) == 2
    async with uow(read_only=True) as work:
        assert await work.log.sequences() == [3, 4]
    assert await watermark(uow) == "2"
    for cursor in (0, 1):
        with pytest.raises(OutOfRange) as raised:
            await start(uow, cursor)
        assert raised.value.reason == "CURSOR_EXPIRED"
        assert raised.value.metadata == {"purged_through": "2"}
        assert raised.value.message == "follow again from the head"
    assert await start(uow, 2) == 2  # read every row it has not seen: still valid
    assert await start(uow, 4) == 4
    assert await start(uow, None) == 2  # a new follower starts at the oldest kept
    assert await start(uow, None, from_head=True) == 4


async def test_a_purge_that_empties_the_feed_puts_the_watermark_at_the_head(uow: Uow) -> None:
    await append(uow, ("u1", timedelta(days=10)), ("u2", timedelta(days=9)))
    await append(uow, ("u3", timedelta(days=8)))
    async with uow() as work:  # erasure took the newest row; its sequence stays used
        await work.log.delete_user("u3")
        await work.commit()
    assert await purge(uow) == 2
    assert await watermark(uow) == "3"
    with pytest.raises(OutOfRange):
        await start(uow, 2)
    assert await start(uow, 3) == 3
    assert await start(uow, None) == 3
    await append(uow, ("u4", timedelta(0)))
    async with uow(read_only=True) as work:
        assert await work.log.sequences() == [4]


async def test_the_watermark_only_moves_when_the_purge_deleted_something(uow: Uow) -> None:
    await append(uow, ("u1", timedelta(days=8)), ("u2", timedelta(days=1)))
    assert await purge(uow) == 1
    assert await watermark(uow) == "1"
    async with uow() as work:  # erasure, not retention: no cursor expires for it
        await work.log.delete_user("u2")
        await work.commit()
    await append(uow, ("u3", timedelta(0)))
    assert await purge(uow) == 0
    assert await watermark(uow) == "1"
    assert await start(uow, 1) == 1
    # The next purge that deletes a row moves the watermark to just before the oldest
    # row kept (u3), past the erased gap.
    await append(uow, ("u4", timedelta(days=8)))  # a late row stamped long ago: sequence 4
    assert await purge(uow) == 1
    assert await watermark(uow) == "2"
    with pytest.raises(OutOfRange):
        await start(uow, 1)


async def test_an_uncommitted_purge_leaves_rows_and_watermark(uow: Uow) -> None:
    await append(uow, ("u1", timedelta(days=8)), ("u2", timedelta(0)))
    async with uow() as work:
        assert await RETENTION.purge(work.state, work.log, NOW, work.log.delete_before) == 1
    assert await watermark(uow) is None
    assert await start(uow, 0) == 0
    async with uow(read_only=True) as work:
        assert await work.log.sequences() == [1, 2]


def test_the_cutoff_is_now_minus_the_kept_period() -> None:
    assert RETENTION.cutoff(NOW) == NOW - timedelta(days=7)


async def test_a_stream_that_a_purge_overtook_is_told_its_position_expired(uow: Uow) -> None:
    """A stream reading page by page checks after each page that no purge deleted rows
    after its position meanwhile; without it, a reader behind the retention would skip
    the deleted rows silently."""
    await append(uow, ("u1", timedelta(days=9)), ("u2", timedelta(days=8)))
    await append(uow, ("u3", timedelta(0)))
    async with uow(read_only=True) as work:
        await RETENTION.still_held(work.state, 0)  # nothing purged yet
    assert await purge(uow) == 2
    async with uow(read_only=True) as work:
        for position in (0, 1):
            with pytest.raises(OutOfRange) as raised:
                await RETENTION.still_held(work.state, position)
            assert raised.value.reason == "CURSOR_EXPIRED"
            assert raised.value.metadata == {"purged_through": "2"}
        await RETENTION.still_held(work.state, 2)
        await RETENTION.still_held(work.state, 3)
