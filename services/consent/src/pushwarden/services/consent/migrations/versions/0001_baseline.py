"""Baseline of the consent database: no tables yet.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

The consent tables arrive with their own revisions; this one gives the database an
Alembic version from the first start, so every later change is an ordinary upgrade.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Nothing to create yet."""


def downgrade() -> None:
    """Nothing to drop."""
