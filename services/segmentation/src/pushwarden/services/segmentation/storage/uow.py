"""The segmentation unit of work: one transaction and the repositories that run on it."""

from __future__ import annotations

import zlib
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import Database, UnitOfWork, UnitOfWorkFactory
from pushwarden.runtime.state import ServiceStateRepository
from pushwarden.services.segmentation.models import ServiceStateRow
from pushwarden.services.segmentation.storage.events import EventRepository
from pushwarden.services.segmentation.storage.lists import ListRepository
from pushwarden.services.segmentation.storage.profiles import ProfileRepository
from pushwarden.services.segmentation.storage.segments import SegmentRepository

# One lock for every append to the event stream of this database.
_APPEND_LOCK_KEY: Final = zlib.crc32(b"pushwarden.segmentation.events")


class SegmentationUnitOfWork(UnitOfWork):
    """Every segmentation repository on one session; rolled back unless committed."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.profiles = ProfileRepository(session)
        self.events = EventRepository(session)
        self.state = ServiceStateRepository(session, ServiceStateRow)
        self.lists = ListRepository(session)
        self.segments = SegmentRepository(session)
        self._appending = False

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.session.bind.dialect.name if self.session.bind is not None else "sqlite"

    async def lock_appends(self) -> None:
        """Serialise this transaction with every other one that appends to the event
        stream, until it ends. Take it before reading what the append depends on (which
        event ids are known) and before any other row lock.

        PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback,
        so sequences are handed out in commit order. SQLite: the write transaction
        (BEGIN IMMEDIATE) already excludes every other writer.
        """
        if self._appending:
            return
        if self.dialect == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY}
            )
        self._appending = True


SegmentationUow = UnitOfWorkFactory[SegmentationUnitOfWork]


def unit_of_work_factory(database: Database) -> SegmentationUow:
    """What the composition root hands to the handlers."""
    return UnitOfWorkFactory(database, SegmentationUnitOfWork)
