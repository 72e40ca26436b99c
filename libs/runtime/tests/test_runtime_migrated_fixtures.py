"""The database fixtures hand out copies of a template migrated once per session when a
test module (or its conftest) names its migrations; each copy is a fresh database.

The tests run in file order: the second writes a row, the third finds none.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.migrations import current_revisions, head_revisions
from pushwarden.runtime.settings import DatabaseSettings

PUSHWARDEN_TEST_MIGRATIONS = Path(__file__).with_name("runtime_sample_migrations")


def _run(url: str, statement: str) -> object:
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def test_the_database_starts_at_head(any_database_url: str) -> None:
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
    try:
        with engine.connect() as connection:
            current = current_revisions(connection)
    finally:
        engine.dispose()
    assert current == head_revisions(PUSHWARDEN_TEST_MIGRATIONS)


def test_a_copy_can_be_written(any_database_url: str) -> None:
    _run(any_database_url, "INSERT INTO owners (id, name) VALUES (1, 'written')")
    assert _run(any_database_url, "SELECT count(*) FROM owners") == 1


def test_the_next_copy_is_fresh(any_database_url: str) -> None:
    assert _run(any_database_url, "SELECT count(*) FROM owners") == 0
