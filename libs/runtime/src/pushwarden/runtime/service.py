"""``serve()``: the loop every service's entrypoint runs.

A service's composition root builds its settings and handlers, then calls
:func:`serve`, which sets telemetry up, builds and starts the server, logs one
``listening`` line, waits for SIGTERM/SIGINT and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc

from pushwarden.runtime.lifecycle import ShutdownSignal, drain_and_stop
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import ServerSettings, TelemetrySettings
from pushwarden.runtime.telemetry import Telemetry, setup_telemetry

logger = logging.getLogger(__name__)

Hook = Callable[[RuntimeServer], Awaitable[None]]


async def serve_async(
    *,
    service: str,
    server: ServerSettings,
    telemetry: TelemetrySettings,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
    otel: Telemetry | None = None,
    on_drain: Callable[[], None] | None = None,
) -> int:
    """Run a service until SIGTERM/SIGINT; return the process exit code (0).

    ``on_start`` runs after the server is listening (start background workers there);
    ``on_stop`` after it has drained (close pools, flush queues). ``otel`` is the
    process's telemetry when the composition root already set it up from ``telemetry``
    (it is set up here otherwise); either way it is flushed and shut down at the end.
    ``on_drain`` runs once the server refuses new RPCs (it ends long-lived streams).
    """
    if otel is None:
        otel = setup_telemetry(telemetry)
    shutdown = ShutdownSignal()
    shutdown.install()
    runtime = create_server(server, register=register, service_names=service_names, telemetry=otel)
    try:
        await runtime.start()
        logger.info(
            "listening",
            extra={
                "service": service,
                "host": server.host,
                "port": runtime.port,
                "tls": server.tls is not None,
                "auth": bool(server.callers),
            },
        )
        if on_start is not None:
            await on_start(runtime)
        received = await shutdown.wait()
        logger.info("signal received", extra={"service": service, "signal": received})
        await drain_and_stop(runtime, server.grace_period_s, on_drain)
        if on_stop is not None:
            await on_stop(runtime)
    finally:
        shutdown.uninstall()
        otel.shutdown()
    return 0


def serve(
    *,
    service: str,
    server: ServerSettings,
    telemetry: TelemetrySettings,
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    on_start: Hook | None = None,
    on_stop: Hook | None = None,
) -> int:
    """Synchronous entry: :func:`serve_async` in a fresh event loop."""
    return asyncio.run(
        serve_async(
            service=service,
            server=server,
            telemetry=telemetry,
            register=register,
            service_names=service_names,
            on_start=on_start,
            on_stop=on_stop,
        )
    )
