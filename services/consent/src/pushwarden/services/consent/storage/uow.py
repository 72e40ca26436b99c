"""The consent unit of work: one transaction and the repositories that run on it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import Database, UnitOfWork, UnitOfWorkFactory
from pushwarden.services.consent.storage.categories import CategoryRepository


class ConsentUnitOfWork(UnitOfWork):
    """Every consent repository on one session; rolled back unless committed."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.categories = CategoryRepository(session)


ConsentUow = UnitOfWorkFactory[ConsentUnitOfWork]


def unit_of_work_factory(database: Database) -> ConsentUow:
    """What the composition root hands to the handlers."""
    return UnitOfWorkFactory(database, ConsentUnitOfWork)
