"""What every delivery handler shares: its dependencies, built by the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pushwarden.runtime.clock import Clock
from pushwarden.services.delivery.consent import ConsentPeer
from pushwarden.services.delivery.storage.uow import DeliveryUow


@dataclass(frozen=True, slots=True)
class DeliveryDeps:
    """The dependencies of every delivery handler."""

    uow: DeliveryUow
    clock: Clock
    consent: ConsentPeer
    # One event per running dispatcher, set when Deliver stored new sends so that an
    # idle dispatcher looks at once.
    wakers: list[asyncio.Event] = field(default_factory=list)

    def work_arrived(self) -> None:
        """Wake every idle dispatcher of this process."""
        for wake in self.wakers:
            wake.set()
