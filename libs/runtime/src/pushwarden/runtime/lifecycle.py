"""Graceful shutdown on SIGTERM / SIGINT.

The order matters to whoever routes traffic to the process: health turns NOT_SERVING
first (load balancers and ``make run``'s supervisor stop sending work), then the server
stops accepting new RPCs and waits up to the grace period for in-flight ones.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable

from pushwarden.runtime.server import RuntimeServer

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class ShutdownSignal:
    """An event set by the first SIGTERM or SIGINT, with the signal's name."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.received: str | None = None

    def install(self, signals: Iterable[signal.Signals] = SHUTDOWN_SIGNALS) -> None:
        """Route ``signals`` to this event on the running loop."""
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self._trigger, sig)

    def uninstall(self, signals: Iterable[signal.Signals] = SHUTDOWN_SIGNALS) -> None:
        """Give the signals back to their default handling."""
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.remove_signal_handler(sig)

    def _trigger(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig.name
        self.event.set()

    async def wait(self) -> str | None:
        """Wait for the signal; return its name."""
        await self.event.wait()
        return self.received


async def drain_and_stop(
    server: RuntimeServer, grace_s: float, draining: Callable[[], None] | None = None
) -> None:
    """NOT_SERVING first, then stop with ``grace_s`` for in-flight RPCs (``draining``
    ends the long-lived streams once new RPCs are refused)."""
    logger.info("shutting down", extra={"grace_period_s": grace_s, "port": server.port})
    await server.stop(grace_s, draining=draining)
    logger.info("stopped", extra={"port": server.port})
