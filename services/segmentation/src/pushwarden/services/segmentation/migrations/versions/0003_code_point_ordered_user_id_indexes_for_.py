"""PostgreSQL only: indexes of (app, user id) in code-point order (``COLLATE "C"``) on
profiles, events and present list members, so that EvaluateSegment can walk the known
users a window at a time in the order it pages in. The database's default collation
orders ids otherwise, and an index in one collation cannot serve a range or an order in
another. SQLite compares ids by code point already and has these indexes (the
profiles' primary key, ``ix_events_user_name_occurred``, ``ix_list_members_user``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 14:04:03.040107
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, WHERE); the models list the names (CODE_POINT_INDEXES).
INDEXES = (
    ("ix_profiles_user_code_point", "profiles", ""),
    ("ix_events_user_code_point", "events", ""),
    ("ix_list_members_user_code_point", "list_members", " WHERE present"),
)


def upgrade() -> None:
    """Apply this revision."""
    if op.get_context().dialect.name != "postgresql":
        return
    for name, table, where in INDEXES:
        op.execute(
            f'CREATE INDEX IF NOT EXISTS {name} ON {table} (app_id, user_id COLLATE "C"){where}'
        )


def downgrade() -> None:
    """Revert this revision."""
    if op.get_context().dialect.name != "postgresql":
        return
    for name, _, _ in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
