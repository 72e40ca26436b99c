"""Pytest plugin (entry point ``pytest11: pushwarden``): databases for storage tests.

Fixtures:

- ``database_url``: a fresh, empty database for one test. A SQLite file under the test's
  ``tmp_path`` by default; with ``PUSHWARDEN_TEST_DB=postgres`` a throwaway PostgreSQL
  database created on the server of ``PUSHWARDEN_TEST_PG_URL`` and dropped afterwards.
- ``any_database_url``: the test once per backend of the run. ``make test`` (no
  ``PUSHWARDEN_TEST_DB``) keeps the SQLite case, ``make test-pg``
  (``PUSHWARDEN_TEST_DB=postgres``) the PostgreSQL one, so CI, which runs both, runs
  each case once; the other case is deselected. ``PUSHWARDEN_TEST_DB=both`` keeps both
  in one run, the PostgreSQL case skipped when the server does not answer. With
  ``postgres`` a server that does not answer is an error, never a skip.
- ``database_settings`` / ``database_engine``: settings and an engine (small pool,
  disposed afterwards) for ``database_url``.

A service's test suite may hand out databases that are already at its migrations' head:
its ``conftest.py`` (or a test module) names them with a module-level
``PUSHWARDEN_TEST_MIGRATIONS = <migrations directory>``, and both fixtures then give a
copy of a template migrated once per test session (a SQLite file copy, or ``CREATE
DATABASE ... TEMPLATE`` on PostgreSQL) instead of an empty database that every test
migrates again. Starting the service on it still runs the migrations, which find
nothing to do; the migration tests themselves keep empty databases (they do not use the
variable).

Every test that uses one of these is marked ``storage``, so ``pytest -m storage`` with
``PUSHWARDEN_TEST_DB=postgres`` runs the storage suites on PostgreSQL.

Test-only switches are read here from the environment; product code reads it only through
:mod:`pushwarden.runtime.config`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
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


def _test_db() -> str:
    return os.environ.get("PUSHWARDEN_TEST_DB", "sqlite").strip().lower()


def postgres_requested() -> bool:
    """Whether ``PUSHWARDEN_TEST_DB=postgres`` asks storage tests to use PostgreSQL."""
    return _test_db() in {"postgres", "postgresql", "pg"}


def run_backends() -> tuple[str, ...]:
    """The backends ``any_database_url`` runs a test on in this run."""
    if postgres_requested():
        return ("postgres",)
    if _test_db() == "both":
        return BACKENDS
    return ("sqlite",)


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
def throwaway_postgres_database(
    prefix: str = "pw_t_", *, template: str | None = None
) -> Iterator[str]:
    """Create a PostgreSQL database (empty, or a copy of ``template``); yield its URL;
    drop it (``WITH (FORCE)``)."""
    server = admin_url()
    name = f"{prefix}{secrets.token_hex(6)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = create_engine(
        server,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class _Templates:
    """Databases migrated once per session, keyed by (backend, migrations directory)."""

    def __init__(self) -> None:
        self.sqlite: dict[Path, Path] = {}
        self.postgres: dict[Path, str] = {}
        self.scratch: Path | None = None

    def sqlite_template(self, migrations: Path) -> Path:
        if migrations not in self.sqlite:
            from pushwarden.runtime.migrations import upgrade_to_head

            if self.scratch is None:
                self.scratch = Path(tempfile.mkdtemp(prefix="pw-templates-"))
            path = self.scratch / f"{len(self.sqlite)}.db"
            engine = create_engine_for(DatabaseSettings(url=f"sqlite:///{path}", pool_size=1))
            try:
                upgrade_to_head(engine, migrations)
                with engine.connect() as connection:
                    # Fold the WAL into the main file so that copying one file copies all.
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                engine.dispose()
            self.sqlite[migrations] = path
        return self.sqlite[migrations]

    def postgres_template(self, migrations: Path) -> str:
        if migrations not in self.postgres:
            from pushwarden.runtime.migrations import upgrade_to_head

            name = f"pw_tpl_{os.getpid()}_{len(self.postgres)}"
            _admin_execute(f'CREATE DATABASE "{name}"')
            upgrade_to_head(admin_url().set(database=name).render_as_string(False), migrations)
            self.postgres[migrations] = name
        return self.postgres[migrations]

    def drop_all(self) -> None:
        for name in self.postgres.values():
            with contextlib.suppress(SQLAlchemyError):
                _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.postgres.clear()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
        self.sqlite.clear()


_TEMPLATES = _Templates()
_VARIABLE = "PUSHWARDEN_TEST_MIGRATIONS"


def _admin_execute(statement: str) -> None:
    admin = create_engine(
        admin_url(),
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def _migrations_for(request: pytest.FixtureRequest) -> Path | None:
    """The migrations a test's databases start at: a module-level
    ``PUSHWARDEN_TEST_MIGRATIONS`` of the test module (``None`` there asks for empty
    databases) or, failing that, of the nearest ``conftest.py`` above the test."""
    module = getattr(request, "module", None)
    if module is not None and hasattr(module, _VARIABLE):
        found = getattr(module, _VARIABLE)
        return Path(found) if found is not None else None
    test_path = Path(str(request.path))
    best: tuple[int, object] | None = None
    for plugin in request.config.pluginmanager.get_plugins():
        origin = getattr(plugin, "__file__", None)
        if not origin or Path(origin).name != "conftest.py" or not hasattr(plugin, _VARIABLE):
            continue
        folder = Path(origin).parent
        if test_path.is_relative_to(folder) and (best is None or len(folder.parts) > best[0]):
            best = (len(folder.parts), getattr(plugin, _VARIABLE))
    return Path(str(best[1])) if best is not None and best[1] is not None else None


@contextmanager
def _database_for(backend: str, tmp_path: Path, migrations: Path | None = None) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path / "db" / "test.db"
        if migrations is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(_TEMPLATES.sqlite_template(migrations), path)
        yield f"sqlite:///{path}"
        return
    reason = postgres_unavailable_reason()
    if reason is not None:
        message = f"PostgreSQL at {admin_url().render_as_string()} unavailable: {reason}"
        if postgres_requested():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    template = _TEMPLATES.postgres_template(migrations) if migrations is not None else None
    with throwaway_postgres_database(template=template) as url:
        yield url


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL: SQLite under ``tmp_path``, or PostgreSQL when
    ``PUSHWARDEN_TEST_DB=postgres`` (migrated when the test's directory asks for it)."""
    backend = "postgres" if postgres_requested() else "sqlite"
    with _database_for(backend, tmp_path, _migrations_for(request)) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL on each backend in turn (the test runs once per backend)."""
    with _database_for(str(request.param), tmp_path, _migrations_for(request)) as url:
        yield url


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the session's template databases."""
    _TEMPLATES.drop_all()


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
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a database fixture as ``storage``; deselect the
    ``any_database_url`` cases of backends this run does not cover."""
    backends = run_backends()
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if STORAGE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.storage)
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("any_database_url") if callspec is not None else None
        (dropped if backend is not None and backend not in backends else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
