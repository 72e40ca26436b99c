"""What every segmentation handler shares: its dependencies and the signal that wakes
StreamEvents followers when events commit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

from google.protobuf.message import Message

from pushwarden.runtime.clock import Clock
from pushwarden.services.segmentation.storage.uow import SegmentationUow


class StreamSignal:
    """Wakes StreamEvents streams of this process when events commit (followers on
    other replicas notice by polling)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Events committed: wake every waiter."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Wait for the next commit or ``timeout_s``, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)


@dataclass(frozen=True, slots=True)
class SegmentationDeps:
    """The dependencies of every segmentation handler, built by the composition root."""

    uow: SegmentationUow
    clock: Clock
    retention: timedelta
    signal: StreamSignal = field(default_factory=StreamSignal)


def request_digest(request: Message) -> str:
    """SHA-256 of a message's deterministic serialization: tells a retry (the same
    request) from a different one under the same key or id."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
