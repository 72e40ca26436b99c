"""The delivery unit of work: one transaction and the repositories that run on it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import Database, UnitOfWork, UnitOfWorkFactory
from pushwarden.services.delivery.storage.engagement import (
    AssignmentRepository,
    EngagementRepository,
    OptOutRepository,
)
from pushwarden.services.delivery.storage.sends import SendRepository
from pushwarden.services.delivery.storage.state import ServiceStateRepository
from pushwarden.services.delivery.storage.stats import StatsRepository


class DeliveryUnitOfWork(UnitOfWork):
    """Every delivery repository on one session; rolled back unless committed."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.sends = SendRepository(session)
        self.state = ServiceStateRepository(session)
        self.assignments = AssignmentRepository(session)
        self.engagement = EngagementRepository(session)
        self.opt_outs = OptOutRepository(session)
        self.stats = StatsRepository(session)


DeliveryUow = UnitOfWorkFactory[DeliveryUnitOfWork]


def unit_of_work_factory(database: Database) -> DeliveryUow:
    """What the composition root hands to the handlers."""
    return UnitOfWorkFactory(database, DeliveryUnitOfWork)
