"""What every service's composition root builds: a wired gRPC service app.

A service's ``bootstrap(config)`` opens its database with :func:`open_database`
(connect, then apply its Alembic migrations) and returns a :class:`ServiceApp`
holding the engine and the gRPC handlers of its servicers; its ``__main__`` is one
call to :func:`run_main`. Tests call the same ``bootstrap``, so what they exercise
is what production runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc
from sqlalchemy import Engine

from pushwarden.runtime.config import (
    ConfigError,
    ServiceConfig,
    config_from_env_or_exit,
    exit_with_config_error,
)
from pushwarden.runtime.db import connect
from pushwarden.runtime.logs import configure_logging
from pushwarden.runtime.migrations import upgrade_to_head
from pushwarden.runtime.service import Hook, serve

ConfigT = TypeVar("ConfigT", bound=ServiceConfig)


@dataclass(slots=True)
class ServiceApp(Generic[ConfigT]):
    """A service ready to serve: its config, its migrated database and its handlers."""

    config: ConfigT
    engine: Engine
    handlers: Sequence[grpc.GenericRpcHandler]
    service_names: tuple[str, ...]

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service's RPCs to ``server``."""
        server.add_generic_rpc_handlers(tuple(self.handlers))

    def serve(self, *, on_start: Hook | None = None) -> int:
        """Serve until SIGTERM/SIGINT (graceful shutdown); returns the exit code."""
        return serve(
            service=self.config.service,
            server=self.config.server_settings(),
            telemetry=self.config.telemetry_settings(),
            register=self.register,
            service_names=self.service_names,
            on_start=on_start,
        )

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def open_database(config: ServiceConfig, migrations: Path) -> Engine:
    """Connect to the service's database and apply its pending migrations.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    engine = connect(config.database_settings(), env_name=config.env_name("database_url"))
    try:
        upgrade_to_head(engine, migrations)
    except BaseException:
        engine.dispose()
        raise
    return engine


def run_main(
    config_cls: type[ConfigT],
    service: str,
    bootstrap: Callable[[ConfigT], ServiceApp[ConfigT]],
) -> int:
    """A service's ``python -m`` entry point: configure (exit 2 with one line naming
    the variable on a bad setting or an unreachable database), migrate, serve."""
    config = config_from_env_or_exit(config_cls, service)
    configure_logging(config.log_settings(), service)
    try:
        app = bootstrap(config)
    except ConfigError as error:
        exit_with_config_error(error)
    try:
        return app.serve()
    finally:
        app.close()
