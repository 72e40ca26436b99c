"""Composition root of the segmentation service: the one place that wires it together.

:func:`bootstrap` turns a :class:`SegmentationConfig` into a ready app (database connected and
migrated, servicer built); the entrypoint and the tests both call it, so what the tests
exercise is what production runs.
"""

from __future__ import annotations

from pathlib import Path

from pushwarden.runtime.app import ServiceApp, open_database
from pushwarden.runtime.unimplemented import service_handler
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    SegmentationServicer,
)

MIGRATIONS = Path(__file__).parent / "migrations"


def bootstrap(config: SegmentationConfig) -> ServiceApp[SegmentationConfig]:
    """Connect to the database, apply pending migrations and build the servicer.

    Raises :class:`pushwarden.runtime.db.DatabaseUnavailable` (a one-line config error
    naming the database variable) when the database cannot be reached.
    """
    database = open_database(config, MIGRATIONS)
    servicer = SegmentationServicer()
    handler = service_handler(SERVICE_DESCRIPTOR, servicer)
    return ServiceApp(config, database, handlers=(handler,), service_names=(SERVICE_NAME,))
