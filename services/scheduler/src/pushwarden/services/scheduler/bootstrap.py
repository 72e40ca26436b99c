"""Composition root of the scheduler service: the one place that wires it together.

:func:`bootstrap` turns a :class:`SchedulerConfig` into a ready :class:`SchedulerApp`
(database connected and migrated, servicer built); the entrypoint and the tests both
call it, so what the tests exercise is what production runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from sqlalchemy import Engine

from pushwarden.runtime.db import connect
from pushwarden.runtime.migrations import upgrade_to_head
from pushwarden.runtime.service import Hook, serve
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.servicer import (
    PENDING_ISSUE,
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    SchedulerServicer,
)

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(slots=True)
class SchedulerApp:
    """A wired scheduler service: its config, database engine and servicer."""

    config: SchedulerConfig
    engine: Engine
    servicer: SchedulerServicer

    service_names: tuple[str, ...] = (SERVICE_NAME,)

    def register(self, server: grpc.aio.Server) -> None:
        """Add every SchedulerService RPC to ``server``."""
        server.add_generic_rpc_handlers(
            (service_handler(SERVICE_DESCRIPTOR, self.servicer, pending_issue=PENDING_ISSUE),)
        )

    def serve(self, *, on_start: Hook | None = None) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
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


def bootstrap(config: SchedulerConfig) -> SchedulerApp:
    """Connect to the database, apply pending migrations and build the servicer.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    engine = connect(config.database_settings(), env_name=config.env_name("database_url"))
    try:
        upgrade_to_head(engine, MIGRATIONS)
    except BaseException:
        engine.dispose()
        raise
    return SchedulerApp(config=config, engine=engine, servicer=SchedulerServicer())
