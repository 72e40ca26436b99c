"""Typed SQLAlchemy models of the consent service.

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL. Tables arrive with the consent issue; the
migrations and the schema check already run against this metadata.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from pushwarden.runtime.db import conventional_metadata


class Base(DeclarativeBase):
    """Declarative base of every consent table."""

    metadata = conventional_metadata()
