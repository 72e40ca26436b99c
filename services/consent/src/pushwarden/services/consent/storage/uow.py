"""The consent unit of work: one transaction and the repositories that run on it."""

from __future__ import annotations

import zlib
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import Database, UnitOfWork, UnitOfWorkFactory
from pushwarden.services.consent.storage.categories import CategoryRepository
from pushwarden.services.consent.storage.choices import ChoiceRepository, SuppressionRepository
from pushwarden.services.consent.storage.devices import DeviceRepository
from pushwarden.services.consent.storage.feed import ChangeFeedRepository
from pushwarden.services.consent.storage.health import AudienceHealthRepository
from pushwarden.services.consent.storage.idempotency import IdempotencyRepository
from pushwarden.services.consent.storage.ledger import LedgerRepository
from pushwarden.services.consent.storage.preferences import PreferencesRepository
from pushwarden.services.consent.storage.prompts import PromptEventRepository
from pushwarden.services.consent.storage.state import ServiceStateRepository
from pushwarden.services.consent.storage.userdata import UserDataRepository

# One lock for every append to the ledger and the change feed of this database.
_APPEND_LOCK_KEY: Final = zlib.crc32(b"pushwarden.consent.appends")


class ConsentUnitOfWork(UnitOfWork):
    """Every consent repository on one session; rolled back unless committed."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.categories = CategoryRepository(session)
        self.devices = DeviceRepository(session)
        self.choices = ChoiceRepository(session)
        self.suppressions = SuppressionRepository(session)
        self.ledger = LedgerRepository(session)
        self.preferences = PreferencesRepository(session)
        self.feed = ChangeFeedRepository(session)
        self.idempotency = IdempotencyRepository(session)
        self.state = ServiceStateRepository(session)
        self.userdata = UserDataRepository(session)
        self.prompts = PromptEventRepository(session)
        self.health = AudienceHealthRepository(session)
        self._appending = False

    async def lock_appends(self) -> None:
        """Serialise this transaction with every other one that appends to the ledger or
        the change feed, until it ends. Take it before reading what the append depends
        on (the chain head, the current state), and before any other row lock.

        PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback,
        so sequence numbers are handed out in commit order. SQLite: the write
        transaction (BEGIN IMMEDIATE) already excludes every other writer.
        """
        if self._appending:
            return
        if self.session.bind is not None and self.session.bind.dialect.name == "postgresql":
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK_KEY}
            )
        self._appending = True


ConsentUow = UnitOfWorkFactory[ConsentUnitOfWork]


def unit_of_work_factory(database: Database) -> ConsentUow:
    """What the composition root hands to the handlers."""
    return UnitOfWorkFactory(database, ConsentUnitOfWork)
