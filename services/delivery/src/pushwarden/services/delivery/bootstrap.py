"""Composition root of the delivery service: the one place that wires it together.

:func:`bootstrap` turns a :class:`DeliveryConfig` into a ready app: the database
connected and migrated, the unit-of-work factory, the channel to consent, every app's
providers from the credentials file, the handlers and the servicer on them, and the
dispatchers and the consent feed follower (erasure, and the opt-outs that statistics
count) as hosted workers. The entrypoint and the tests both call it, so what the tests
exercise is what production runs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.client import idempotent_methods, open_peer_channel
from pushwarden.runtime.clock import clock_for
from pushwarden.runtime.follower import ConsentFeedFollower, FollowerSettings
from pushwarden.runtime.telemetry import Telemetry, setup_telemetry
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.runtime.workers import Worker
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.delivery.consent import CONSENT_SERVICE, ConsentPeer
from pushwarden.services.delivery.domain.retry import RetryRule
from pushwarden.services.delivery.domain.sends import Kind
from pushwarden.services.delivery.handlers.common import DeliveryDeps
from pushwarden.services.delivery.handlers.deliveries import DeliveryHandlers
from pushwarden.services.delivery.handlers.dispatch import Dispatcher, DispatchSettings
from pushwarden.services.delivery.handlers.engagement import EngagementHandlers
from pushwarden.services.delivery.handlers.erasure import FOLLOWED_KINDS, ErasureHandlers
from pushwarden.services.delivery.handlers.stats import StatsHandlers
from pushwarden.services.delivery.providers import Providers
from pushwarden.services.delivery.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    DeliveryServiceHandlers,
    DeliveryServicer,
)
from pushwarden.services.delivery.storage.uow import unit_of_work_factory
from pushwarden.services.delivery.telemetry import AttemptTelemetry

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(
    config: DeliveryConfig, *, telemetry: Telemetry | AttemptTelemetry | None = None
) -> ServiceApp[DeliveryConfig]:
    """Connect to the database, apply pending migrations and wire the service.

    ``telemetry`` (tests inject their own) traces the server, the calls to consent and
    the provider attempts; by default it is set up from the config's ``OTEL_*``
    settings, once for the process. An :class:`AttemptTelemetry` given instead records
    the provider attempts alone and leaves the rest to the config.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    database = open_database(config, MIGRATIONS)
    otel = (
        telemetry
        if isinstance(telemetry, Telemetry)
        else setup_telemetry(config.telemetry_settings())
    )
    attempts = (
        telemetry
        if isinstance(telemetry, AttemptTelemetry)
        else AttemptTelemetry(otel.tracer_provider, otel.meter_provider)
    )
    channel = open_peer_channel(
        config,
        config.consent_addr,
        default_timeout_s=config.consent_timeout_s,
        idempotent_methods=idempotent_methods(CONSENT_SERVICE),
        telemetry=otel,
    )
    deps = DeliveryDeps(
        uow=unit_of_work_factory(database),
        clock=clock_for(config.clock_file),
        consent=ConsentPeer(channel, config.consent_timeout_s),
    )
    providers = Providers(config.provider_credentials(), config.provider_settings())
    rule = RetryRule(
        max_attempts=config.max_attempts, base_s=config.retry_base_s, max_s=config.retry_max_s
    )
    settings = DispatchSettings(
        batch=config.dispatch_batch, poll_s=config.dispatch_poll_s, lease_s=config.claim_lease_s
    )
    # Two loops: one for every lane (transactional first), and one that serves the
    # transactional lane alone, so an order update never waits behind a marketing batch
    # that is in flight to a slow provider (its SQLite writes go ahead of the other's).
    dispatchers = (
        Worker("dispatch", Dispatcher(deps, providers, rule, settings, attempts).run),
        Worker(
            "dispatch-transactional",
            Dispatcher(
                deps,
                providers,
                rule,
                replace(settings, lanes=(Kind.TRANSACTIONAL.lane,)),
                attempts,
            ).run,
            urgent=True,
        ),
    )
    erasure = ErasureHandlers(deps)
    follower = ConsentFeedFollower(
        channel,
        erasure,
        erasure.on_changes,
        resync=erasure.resync,
        settings=FollowerSettings(kinds=FOLLOWED_KINDS),
    )
    servicer = DeliveryServicer(
        DeliveryServiceHandlers(
            deliveries=DeliveryHandlers(deps),
            engagement=EngagementHandlers(deps),
            stats=StatsHandlers(deps),
        )
    )

    async def close_channel() -> None:
        await channel.close()

    return ServiceApp(
        config,
        database,
        handlers=(service_handler(SERVICE_DESCRIPTOR, servicer),),
        service_names=(SERVICE_NAME,),
        clock=deps.clock,
        workers=(
            *(dispatchers if config.dispatch else ()),
            Worker("erasure", follower.run),
        ),
        # Closed last to first: the providers inside the loop they sent from, then consent.
        closers=[close_channel, providers.aclose],
        telemetry=otel,
    )
