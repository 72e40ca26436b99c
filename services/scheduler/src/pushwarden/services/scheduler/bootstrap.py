"""Composition root of the scheduler service: the one place that wires it together.

:func:`bootstrap` turns a :class:`SchedulerConfig` into a ready app: the database
connected and migrated, the unit-of-work factory, the channels to consent,
segmentation and delivery, the handlers and the servicer on them, and as hosted
workers the campaign fan-out and the dispatch loops and outboxes (one of each per lane,
so marketing work never delays a transactional send), the consent feed follower and the
event-stream follower that fires triggers.
The entrypoint and the tests both call it, so what the tests exercise is what
production runs.
"""

from __future__ import annotations

from pathlib import Path

from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.client import idempotent_methods, open_peer_channel
from pushwarden.runtime.clock import clock_for
from pushwarden.runtime.follower import ConsentFeedFollower, FollowerSettings
from pushwarden.runtime.state import StateCursorStore
from pushwarden.runtime.telemetry import Telemetry, setup_telemetry
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.runtime.workers import Worker
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.domain.intents import Lane
from pushwarden.services.scheduler.handlers.campaigns import CampaignHandlers
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.handlers.dispatch import Dispatcher, DispatchSettings
from pushwarden.services.scheduler.handlers.explain import ExplainHandlers
from pushwarden.services.scheduler.handlers.fanout import Fanout, FanoutSettings
from pushwarden.services.scheduler.handlers.feed import FEED_CURSOR, FeedHandlers
from pushwarden.services.scheduler.handlers.feed import KINDS as FEED_KINDS
from pushwarden.services.scheduler.handlers.outbox import Outbox, OutboxSettings
from pushwarden.services.scheduler.handlers.policies import PolicyHandlers
from pushwarden.services.scheduler.handlers.prepare import Preparer
from pushwarden.services.scheduler.handlers.sends import SendHandlers
from pushwarden.services.scheduler.handlers.triggers import TriggerFollower, TriggerHandlers
from pushwarden.services.scheduler.peers.consent import CONSENT_SERVICE, ConsentPeer
from pushwarden.services.scheduler.peers.delivery import DELIVERY_SERVICE, DeliveryPeer
from pushwarden.services.scheduler.peers.segmentation import SEGMENTATION_SERVICE, SegmentationPeer
from pushwarden.services.scheduler.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    SchedulerServiceHandlers,
    SchedulerServicer,
)
from pushwarden.services.scheduler.storage.uow import unit_of_work_factory
from pushwarden.services.scheduler.telemetry import SendTracing

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(
    config: SchedulerConfig, *, telemetry: Telemetry | None = None
) -> ServiceApp[SchedulerConfig]:
    """Connect to the database, apply pending migrations and wire the service.

    ``telemetry`` (tests inject their own) traces the server, the calls to the peers and
    the sends' way through the queues; by default it is set up from the config's
    ``OTEL_*`` settings, once for the process.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    database = open_database(config, MIGRATIONS)
    otel = telemetry if telemetry is not None else setup_telemetry(config.telemetry_settings())
    consent_channel = open_peer_channel(
        config,
        config.consent_addr,
        default_timeout_s=config.peer_timeout_s,
        idempotent_methods=idempotent_methods(CONSENT_SERVICE),
        telemetry=otel,
    )
    segmentation_channel = open_peer_channel(
        config,
        config.segmentation_addr,
        default_timeout_s=config.peer_timeout_s,
        idempotent_methods=idempotent_methods(SEGMENTATION_SERVICE),
        telemetry=otel,
    )
    delivery_channel = open_peer_channel(
        config,
        config.delivery_addr,
        default_timeout_s=config.peer_timeout_s,
        idempotent_methods=idempotent_methods(DELIVERY_SERVICE),
        telemetry=otel,
    )
    deps = SchedulerDeps(
        uow=unit_of_work_factory(database),
        clock=clock_for(config.clock_file),
        consent=ConsentPeer(consent_channel, config.peer_timeout_s),
        delivery=DeliveryPeer(delivery_channel, config.peer_timeout_s),
        tracing=SendTracing(otel),
    )
    segmentation = SegmentationPeer(segmentation_channel, config.peer_timeout_s)
    policies = PolicyHandlers(deps.uow, deps.clock, deps.consent)
    preparer = Preparer(deps, segmentation)
    workers: list[Worker] = []
    if config.dispatch:
        fanout = FanoutSettings(
            poll_s=config.dispatch_poll_s,
            lease_s=config.claim_lease_s,
            page_size=config.fanout_page_size,
        )
        workers.append(Worker("fanout", Fanout(deps, segmentation, policies, fanout).run))
        for lane in (Lane.TRANSACTIONAL, Lane.MARKETING):
            name = lane.name.lower()
            dispatch = DispatchSettings(
                lanes=(lane,),
                batch=config.dispatch_batch,
                poll_s=config.dispatch_poll_s,
                lease_s=config.claim_lease_s,
            )
            outbox = OutboxSettings(
                lanes=(lane,),
                batch=config.dispatch_batch,
                poll_s=config.dispatch_poll_s,
                lease_s=config.claim_lease_s,
                retry_max_s=config.handoff_retry_max_s,
            )
            loops = config.marketing_loops if lane is Lane.MARKETING else 1
            # The transactional lane's writes go ahead of marketing's (SQLite).
            urgent = lane is Lane.TRANSACTIONAL
            workers.extend(
                Worker(
                    f"dispatch-{name}" + (f"-{n}" if n else ""),
                    Dispatcher(deps, policies, preparer, dispatch).run,
                    urgent=urgent,
                )
                for n in range(loops)
            )
            workers.append(Worker(f"outbox-{name}", Outbox(deps, outbox).run, urgent=urgent))
    feed = FeedHandlers(deps, policies)
    follower = ConsentFeedFollower(
        consent_channel,
        StateCursorStore(deps.uow, FEED_CURSOR),
        feed.on_changes,
        resync=feed.resync,
        # From the oldest change on a first start: an erasure from before it is honoured.
        settings=FollowerSettings(kinds=FEED_KINDS, start_at_head=False),
    )
    workers.append(Worker("consent-feed", follower.run))
    workers.append(Worker("event-stream", TriggerFollower(deps, segmentation).run))
    campaigns = CampaignHandlers(deps, segmentation)
    servicer = SchedulerServicer(
        SchedulerServiceHandlers(
            sends=SendHandlers(deps),
            campaigns=campaigns,
            policies=policies,
            explain=ExplainHandlers(deps, segmentation, policies, preparer, campaigns),
            triggers=TriggerHandlers(deps),
        )
    )

    async def close_channels() -> None:
        await consent_channel.close()
        await segmentation_channel.close()
        await delivery_channel.close()

    return ServiceApp(
        config,
        database,
        handlers=(service_handler(SERVICE_DESCRIPTOR, servicer),),
        service_names=(SERVICE_NAME,),
        clock=deps.clock,
        workers=tuple(workers),
        closers=[close_channels],
        telemetry=otel,
    )
