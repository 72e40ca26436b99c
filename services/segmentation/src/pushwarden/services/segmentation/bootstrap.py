"""Composition root of the segmentation service: the one place that wires it together.

:func:`bootstrap` turns a :class:`SegmentationConfig` into a ready app: the database
connected and migrated, the unit-of-work factory, the handlers on it and the service's
clock, the servicer on the handlers, the hosted workers. The entrypoint and the tests
both call it, so what the tests exercise is what production runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from pushwarden.consent.v1 import consent_pb2, resources_pb2
from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceStub
from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.client import idempotent_methods, open_peer_channel
from pushwarden.runtime.clock import clock_for
from pushwarden.runtime.feed import StreamTiming
from pushwarden.runtime.follower import ConsentFeedFollower, FollowerSettings
from pushwarden.runtime.state import StateCursorStore
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.runtime.workers import Worker, WorkerContext
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.handlers.common import SegmentationDeps
from pushwarden.services.segmentation.handlers.events import EventHandlers
from pushwarden.services.segmentation.handlers.gdpr import (
    CONSENT_CURSOR,
    ErasureHandlers,
    GdprHandlers,
)
from pushwarden.services.segmentation.handlers.lists import ListHandlers
from pushwarden.services.segmentation.handlers.profiles import ProfileHandlers, ProfileReads
from pushwarden.services.segmentation.handlers.segments import SegmentHandlers
from pushwarden.services.segmentation.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    SegmentationHandlers,
    SegmentationServicer,
)
from pushwarden.services.segmentation.storage.uow import unit_of_work_factory

MIGRATIONS = Path(__file__).parent / "migrations"
CONSENT_SERVICE = consent_pb2.DESCRIPTOR.services_by_name["ConsentService"]


def bootstrap(config: SegmentationConfig) -> ServiceApp[SegmentationConfig]:
    """Connect to the database, apply pending migrations and wire the service.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    database = open_database(config, MIGRATIONS)
    deps = SegmentationDeps(
        uow=unit_of_work_factory(database),
        clock=clock_for(config.clock_file),
        retention=timedelta(days=config.event_retention_days),
    )
    events = EventHandlers(
        deps, StreamTiming(heartbeat_s=config.stream_heartbeat_s, poll_s=config.stream_poll_s)
    )
    servicer = SegmentationServicer(
        SegmentationHandlers(
            profiles=ProfileHandlers(deps),
            events=events,
            profile_reads=ProfileReads(deps),
            lists=ListHandlers(deps),
            segments=SegmentHandlers(deps),
            gdpr=GdprHandlers(deps),
        )
    )
    return ServiceApp(
        config,
        database,
        handlers=(service_handler(SERVICE_DESCRIPTOR, servicer),),
        service_names=(SERVICE_NAME,),
        clock=deps.clock,
        workers=(
            Worker("event-retention", events.retention_worker),
            Worker("erasure", erasure_worker(config, deps)),
        ),
        drain_hooks=[deps.signal.close],
    )


def erasure_worker(
    config: SegmentationConfig, deps: SegmentationDeps
) -> Callable[[WorkerContext], Awaitable[None]]:
    """The worker that follows consent's change feed and erases whom consent erased.

    Its channel to consent (segmentation's only use of consent) is opened inside the
    worker, on the loop that runs it: a ``grpc.aio`` channel belongs to the event loop
    it was made in, so it must not depend on where :func:`bootstrap` was called (a tool
    or test may call it with no loop running); and it closes when the worker ends.
    """

    async def run(ctx: WorkerContext) -> None:
        async with open_peer_channel(
            config,
            config.consent_addr,
            default_timeout_s=config.consent_timeout_s,
            idempotent_methods=idempotent_methods(CONSENT_SERVICE),
        ) as channel:
            erasure = ErasureHandlers(deps, ConsentServiceStub(channel))
            follower = ConsentFeedFollower(
                channel,
                StateCursorStore(deps.uow, CONSENT_CURSOR),
                erasure.on_changes,
                resync=erasure.resync,
                settings=FollowerSettings(
                    kinds=(resources_pb2.CHANGE_KIND_ERASED,),
                    start_at_head=False,
                    initial_backoff_s=config.consent_poll_s,
                ),
            )
            await follower.run(ctx)

    return run
