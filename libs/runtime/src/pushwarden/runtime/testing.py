"""Pytest plugin (entry point ``pytest11: pushwarden``): databases for storage tests.

Fixtures:

- ``database_url``: a fresh, empty database for one test. A SQLite file under the test's
  ``tmp_path`` by default; with ``PUSHWARDEN_TEST_DB=postgres`` a throwaway PostgreSQL
  database created on the server of ``PUSHWARDEN_TEST_PG_URL`` and dropped afterwards.
- ``any_database_url``: the same test once on SQLite and once on PostgreSQL. The
  PostgreSQL case is skipped when the server does not answer, unless
  ``PUSHWARDEN_TEST_DB=postgres`` asks for PostgreSQL, which makes it an error.
- ``database_settings`` / ``database_engine``: settings and an engine (small pool,
  disposed afterwards) for ``database_url``.

Every test that uses one of these is marked ``storage``, so ``pytest -m storage`` with
``PUSHWARDEN_TEST_DB=postgres`` runs the storage suites on PostgreSQL.

Test-only switches are read here from the environment; product code reads it only through
:mod:`pushwarden.runtime.config`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pushwarden.runtime.db import create_engine_for
from pushwarden.runtime.settings import DatabaseSettings

DEFAULT_TEST_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
STORAGE_FIXTURES = frozenset(
    {"database_url", "any_database_url", "database_settings", "database_engine"}
)
BACKENDS = ("sqlite", "postgres")
TEST_POOL_SIZE = 2


def postgres_requested() -> bool:
    """Whether ``PUSHWARDEN_TEST_DB=postgres`` asks storage tests to use PostgreSQL."""
    return os.environ.get("PUSHWARDEN_TEST_DB", "sqlite").strip().lower() in {
        "postgres",
        "postgresql",
        "pg",
    }


def admin_url() -> URL:
    """The PostgreSQL server that throwaway databases are created on."""
    url = make_url(os.environ.get("PUSHWARDEN_TEST_PG_URL") or DEFAULT_TEST_PG_URL)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url


@cache
def postgres_unavailable_reason() -> str | None:
    """None when the test PostgreSQL server answers, else why not (probed once)."""
    engine = create_engine(admin_url(), poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return " ".join(str(getattr(exc, "orig", exc)).split())
    finally:
        engine.dispose()
    return None


@contextmanager
def throwaway_postgres_database(prefix: str = "pw_t_") -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its URL; drop it (``WITH (FORCE)``)."""
    server = admin_url()
    name = f"{prefix}{secrets.token_hex(6)}"
    admin = create_engine(
        server,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def _database_for(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'test.db'}"
        return
    reason = postgres_unavailable_reason()
    if reason is not None:
        message = f"PostgreSQL at {admin_url().render_as_string()} unavailable: {reason}"
        if postgres_requested():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: SQLite under ``tmp_path``, or PostgreSQL when
    ``PUSHWARDEN_TEST_DB=postgres``."""
    with _database_for("postgres" if postgres_requested() else "sqlite", tmp_path) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL on each backend in turn (the test runs once per backend)."""
    with _database_for(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
def database_settings(database_url: str) -> DatabaseSettings:
    """Settings for ``database_url`` with a pool sized for tests."""
    return DatabaseSettings(url=database_url, pool_size=TEST_POOL_SIZE)


@pytest.fixture
def database_engine(database_settings: DatabaseSettings) -> Iterator[Engine]:
    """An engine for ``database_url`` (pragmas and pool as in production), disposed after."""
    engine = create_engine_for(database_settings)
    try:
        yield engine
    finally:
        engine.dispose()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``storage`` marker."""
    config.addinivalue_line(
        "markers",
        "storage: uses a database; runs on PostgreSQL with PUSHWARDEN_TEST_DB=postgres",
    )


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a database fixture as ``storage``."""
    for item in items:
        if STORAGE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.storage)
