"""Typed SQLAlchemy models of the consent service (the tables its migrations create).

The declarative base carries the runtime's naming convention so that constraint names
are the same on SQLite and PostgreSQL. Enumerations are stored by name (``MARKETING``),
checked by the database, so a row reads the same in ``psql`` as in the contract.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import UtcDateTime, conventional_metadata

ID = String(128)


class Base(DeclarativeBase):
    """Declarative base of every consent table."""

    metadata = conventional_metadata()


class CategoryRow(Base):
    """A message category of an app; its kind never changes once written."""

    __tablename__ = "categories"
    __table_args__ = (
        CheckConstraint("kind IN ('TRANSACTIONAL', 'MARKETING')", name="kind"),
        CheckConstraint("default_state IN ('OPTED_IN', 'OPTED_OUT')", name="default_state"),
    )

    app_id: Mapped[str] = mapped_column(ID, primary_key=True)
    category_id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    default_state: Mapped[str] = mapped_column(String(16))
    user_can_opt_out: Mapped[bool] = mapped_column(Boolean)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
