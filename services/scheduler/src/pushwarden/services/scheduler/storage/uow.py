"""The scheduler unit of work: one transaction and the repositories that run on it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import Database, UnitOfWork, UnitOfWorkFactory
from pushwarden.runtime.state import ServiceStateRepository
from pushwarden.services.scheduler.models import ServiceStateRow
from pushwarden.services.scheduler.storage.campaigns import CampaignRepository
from pushwarden.services.scheduler.storage.intents import IntentRepository
from pushwarden.services.scheduler.storage.policies import PolicyRepository
from pushwarden.services.scheduler.storage.triggers import TriggerRepository


class SchedulerUnitOfWork(UnitOfWork):
    """Every scheduler repository on one session; rolled back unless committed."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.policies = PolicyRepository(session)
        self.intents = IntentRepository(session)
        self.campaigns = CampaignRepository(session)
        self.triggers = TriggerRepository(session)
        self.state = ServiceStateRepository(session, ServiceStateRow)


SchedulerUow = UnitOfWorkFactory[SchedulerUnitOfWork]


def unit_of_work_factory(database: Database) -> SchedulerUow:
    """What the composition root hands to the handlers."""
    return UnitOfWorkFactory(database, SchedulerUnitOfWork)
