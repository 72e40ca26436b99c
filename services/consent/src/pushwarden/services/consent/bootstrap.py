"""Composition root of the consent service: the one place that wires it together.

:func:`bootstrap` turns a :class:`ConsentConfig` into a ready app: the database
connected and migrated, the unit-of-work factory, the handlers on it and the service's
clock, the servicer on the handlers. The entrypoint and the tests both call it, so what
the tests exercise is what production runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.clock import clock_for
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.runtime.workers import Worker
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.domain.subjects import Pseudonyms
from pushwarden.services.consent.handlers.categories import CategoryHandlers
from pushwarden.services.consent.handlers.common import ConsentDeps
from pushwarden.services.consent.handlers.consent import ChoiceHandlers
from pushwarden.services.consent.handlers.devices import DeviceHandlers
from pushwarden.services.consent.handlers.eligibility import EligibilityHandlers
from pushwarden.services.consent.handlers.feed import FeedHandlers, FeedSettings
from pushwarden.services.consent.handlers.gdpr import GdprHandlers
from pushwarden.services.consent.handlers.health import HealthHandlers
from pushwarden.services.consent.handlers.ledger import LedgerHandlers
from pushwarden.services.consent.handlers.preferences import PreferenceHandlers
from pushwarden.services.consent.handlers.prompts import PromptHandlers
from pushwarden.services.consent.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    ConsentHandlers,
    ConsentServicer,
)
from pushwarden.services.consent.storage.state import local_pseudonym_key
from pushwarden.services.consent.storage.uow import unit_of_work_factory

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(config: ConsentConfig) -> ServiceApp[ConsentConfig]:
    """Connect to the database, apply pending migrations and wire the service.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    database = open_database(config, MIGRATIONS)
    key = config.pseudonym_key or local_pseudonym_key(config.database_settings())
    deps = ConsentDeps(
        uow=unit_of_work_factory(database),
        clock=clock_for(config.clock_file),
        pseudonyms=Pseudonyms(key),
    )
    feed = FeedHandlers(
        deps,
        FeedSettings(
            retention=timedelta(days=config.feed_retention_days),
            heartbeat_s=config.feed_heartbeat_s,
            poll_s=config.feed_poll_s,
        ),
    )
    choices = ChoiceHandlers(deps)
    preferences = PreferenceHandlers(deps)
    servicer = ConsentServicer(
        ConsentHandlers(
            categories=CategoryHandlers(deps),
            devices=DeviceHandlers(deps),
            consent=choices,
            ledger=LedgerHandlers(deps),
            feed=feed,
            preferences=preferences,
            eligibility=EligibilityHandlers(deps),
            gdpr=GdprHandlers(deps, choices, preferences),
            prompts=PromptHandlers(deps),
            health=HealthHandlers(deps),
        )
    )
    return ServiceApp(
        config,
        database,
        handlers=(service_handler(SERVICE_DESCRIPTOR, servicer),),
        service_names=(SERVICE_NAME,),
        clock=deps.clock,
        workers=(Worker("feed-retention", feed.retention_worker),),
        drain_hooks=[deps.signal.close],
    )
