"""What every service's composition root builds: a wired gRPC service app.

A service's ``bootstrap(config)`` opens its database with :func:`open_database` (check
the connection and apply its Alembic migrations synchronously, then hand back the asyncio
engine the RPCs run on), builds its repositories, handlers and servicer, and returns a
:class:`ServiceApp`: the database, the gRPC handlers, the background workers and the
clock. Its ``__main__`` is one call to :func:`run_main`. Tests call the same
``bootstrap`` and serve it with :meth:`ServiceApp.start` / :meth:`ServiceApp.stop`, so
what they exercise is what production runs.

Lifecycle: the server starts and reports SERVING, then the workers start; on SIGTERM or
SIGINT health turns NOT_SERVING, in-flight RPCs drain, the workers stop, and the
database and any clients the app registered in ``closers`` are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import grpc

from pushwarden.runtime.clock import Clock, clock_for
from pushwarden.runtime.config import (
    ConfigError,
    ServiceConfig,
    config_from_env_or_exit,
    exit_with_config_error,
)
from pushwarden.runtime.db import Database, connect, create_async_engine_for
from pushwarden.runtime.lifecycle import drain_and_stop
from pushwarden.runtime.logs import configure_logging
from pushwarden.runtime.migrations import upgrade_to_head
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.service import serve_async
from pushwarden.runtime.telemetry import Telemetry
from pushwarden.runtime.workers import Worker, WorkerHost

ConfigT = TypeVar("ConfigT", bound=ServiceConfig)

Closer = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class ServiceApp(Generic[ConfigT]):
    """A service ready to serve: its config, migrated database, handlers and workers."""

    config: ConfigT
    database: Database
    handlers: Sequence[grpc.GenericRpcHandler]
    service_names: tuple[str, ...]
    workers: Sequence[Worker] = ()
    clock: Clock | None = None
    closers: list[Closer] = field(default_factory=list)
    # The process's telemetry when the composition root set it up (its peer channels and
    # workers trace with it); None leaves the set-up to serve, from the config.
    telemetry: Telemetry | None = None
    # Called once the server refuses new RPCs on the way down: each ends the service's
    # long-lived streams (a feed's ``FeedSignal.close``) so they finish inside the grace.
    drain_hooks: list[Callable[[], None]] = field(default_factory=list)
    host: WorkerHost = field(init=False)
    # The server once it serves (workers may read its port), None before.
    runtime: RuntimeServer | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.clock is None:
            self.clock = clock_for(self.config.clock_file)
        self.host = WorkerHost(self.workers)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service's RPCs to ``server``."""
        server.add_generic_rpc_handlers(tuple(self.handlers))

    async def start(self, *, telemetry: Telemetry | None = None) -> RuntimeServer:
        """Bind and start the server (SERVING), then start the workers; for tests and
        tools that drive the lifecycle themselves (``serve`` does it for production).
        The server traces with ``telemetry``, else with the app's own."""
        runtime = create_server(
            self.config.server_settings(),
            register=self.register,
            service_names=self.service_names,
            telemetry=telemetry if telemetry is not None else self.telemetry,
        )
        await runtime.start()
        await self._after_start(runtime)
        return runtime

    async def stop(self, runtime: RuntimeServer, grace_s: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, drain in-flight RPCs, stop workers, close."""
        grace = self.config.grace_period_s if grace_s is None else grace_s
        try:
            await drain_and_stop(runtime, grace, self._draining)
        finally:
            await self._after_stop(runtime, grace)

    def _draining(self) -> None:
        for hook in self.drain_hooks:
            hook()

    async def _after_start(self, runtime: RuntimeServer) -> None:
        self.runtime = runtime
        self.host.start()

    async def _after_stop(self, _runtime: RuntimeServer, grace_s: float) -> None:
        try:
            await self.host.stop(grace_s)
        finally:
            await self.aclose()

    async def serve_async(self) -> int:
        """Serve until SIGTERM/SIGINT (graceful shutdown); returns the exit code."""
        grace = self.config.grace_period_s
        try:
            return await serve_async(
                service=self.config.service,
                server=self.config.server_settings(),
                telemetry=self.config.telemetry_settings(),
                otel=self.telemetry,
                register=self.register,
                service_names=self.service_names,
                on_start=self._after_start,
                on_stop=lambda runtime: self._after_stop(runtime, grace),
                on_drain=self._draining,
            )
        finally:
            await self.aclose()

    def serve(self) -> int:
        """:meth:`serve_async` in a fresh event loop."""
        return asyncio.run(self.serve_async())

    async def aclose(self) -> None:
        """Close registered clients, then the database connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            for close in reversed(self.closers):
                await close()
        finally:
            await self.database.dispose()


def open_database(config: ServiceConfig, migrations: Path) -> Database:
    """Connect to the service's database, apply its pending migrations, and return the
    asyncio :class:`Database` the service runs on.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    settings = config.database_settings()
    engine = connect(settings, env_name=config.env_name("database_url"))
    try:
        upgrade_to_head(engine, migrations)
    finally:
        engine.dispose()
    return Database(create_async_engine_for(settings))


def run_main(
    config_cls: type[ConfigT],
    service: str,
    bootstrap: Callable[[ConfigT], ServiceApp[ConfigT]],
) -> int:
    """A service's ``python -m`` entry point: configure, migrate, serve.

    A bad setting, an unreachable database, a port in use or unreadable TLS files end
    the process with one line naming the variable and exit status 2.
    """
    config = config_from_env_or_exit(config_cls, service)
    configure_logging(config.log_settings(), service)

    async def bootstrap_and_serve() -> int:
        # Bootstrapped on the loop that serves: grpc.aio channels to peers bind to the
        # running loop when they are made, and would fail on any other.
        return await bootstrap(config).serve_async()

    try:
        return asyncio.run(bootstrap_and_serve())
    except ConfigError as error:
        exit_with_config_error(error)
