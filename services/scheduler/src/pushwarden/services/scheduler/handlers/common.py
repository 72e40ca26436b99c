"""What every scheduler handler shares: its dependencies, built by the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pushwarden.runtime.clock import Clock
from pushwarden.services.scheduler.domain.intents import Lane
from pushwarden.services.scheduler.peers.consent import ConsentPeer
from pushwarden.services.scheduler.peers.delivery import DeliveryPeer
from pushwarden.services.scheduler.storage.uow import SchedulerUow
from pushwarden.services.scheduler.telemetry import SendTracing


@dataclass(frozen=True, slots=True)
class SchedulerDeps:
    """The dependencies of every scheduler handler."""

    uow: SchedulerUow
    clock: Clock
    consent: ConsentPeer
    delivery: DeliveryPeer
    # The spans of traced sends (dispatch decisions, hand-overs); none by default.
    tracing: SendTracing = field(default_factory=SendTracing)
    # Events that wake this process's idle loops at once: the dispatch loop of each
    # lane when intents arrive, the outbox of each lane when a decision allowed sends.
    dispatch_wakers: dict[Lane, list[asyncio.Event]] = field(default_factory=dict)
    outbox_wakers: dict[Lane, list[asyncio.Event]] = field(default_factory=dict)

    def intents_arrived(self, lane: Lane) -> None:
        """Wake the dispatch loops that serve ``lane``."""
        for wake in self.dispatch_wakers.get(lane, ()):
            wake.set()

    def sends_allowed(self, lane: Lane) -> None:
        """Wake the outboxes that serve ``lane``."""
        for wake in self.outbox_wakers.get(lane, ()):
            wake.set()
