"""Alembic migrations per service, run programmatically at start (no alembic.ini).

A service ships a ``migrations/`` directory inside its package with ``versions/``, a
``script.py.mako`` revision template and an ``env.py`` that is just::

    from alembic import context
    from pushwarden.runtime.migrations import run_env
    from pushwarden.services.consent.models import Base

    run_env(context, Base.metadata)

and calls :func:`upgrade_to_head` from its bootstrap. Its tests call :func:`schema_diff`
to show that autogenerate finds no difference between the models and the migrated schema.
After changing the models, write the next revision with::

    python -m pushwarden.runtime.migrations revision <migrations dir> -m "what changed"
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, cast

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.types import TypeDecorator

from pushwarden.runtime.db import SQLITE_BEGIN_OPTION, create_engine_for, is_sqlite
from pushwarden.runtime.settings import DatabaseSettings

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]

# One key for every service: each service has its own database, so the lock only ever
# serialises replicas of the same service starting together.
_PG_MIGRATION_LOCK_KEY: Final = zlib.crc32(b"pushwarden.runtime.migrations")

_IN_PROCESS_LOCK: Final = threading.Lock()


def _render_item(type_: str, obj: Any, _autogen_context: Any) -> str | Literal[False]:
    """Render a column type that wraps another (``UtcDateTime``) as the type it wraps,
    so revisions never import the runtime's Python types."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


COMPARE_OPTIONS: Final[dict[str, Any]] = {"compare_type": True, "render_item": _render_item}


def alembic_config(script_location: Path, url: str | None = None) -> Config:
    """An Alembic ``Config`` built in memory for ``script_location`` (and optional URL)."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    # Alembic warns when this is left to its legacy default; nothing here uses paths lists.
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(
    engine_or_url: Engine | str, script_location: Path, *, revision: str = "heads"
) -> None:
    """Apply every pending migration in ``script_location`` in one transaction.

    Replicas starting at once do not race: on PostgreSQL a transaction-scoped advisory
    lock serialises them, on SQLite the IMMEDIATE transaction does. Within one process
    calls are serialised too, because Alembic keeps its running environment in a global.

    On SQLite, foreign keys are off while the migrations run (batch mode rebuilds a table
    by dropping it, which would otherwise cascade or fail on its children) and checked
    with ``PRAGMA foreign_key_check`` before the commit, as SQLite's documentation asks.
    """
    engine, owned = _engine(engine_or_url)
    try:
        with _IN_PROCESS_LOCK, engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                _set_sqlite_foreign_keys(connection, enabled=False)
            try:
                _upgrade(connection, script_location, revision)
            finally:
                if sqlite:
                    _set_sqlite_foreign_keys(connection, enabled=True)
    finally:
        if owned:
            engine.dispose()


def _upgrade(connection: Connection, script_location: Path, revision: str) -> None:
    with connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}).begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        config = alembic_config(script_location)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migrations leave rows that break foreign keys: {broken}")


def _set_sqlite_foreign_keys(connection: Connection, *, enabled: bool) -> None:
    # Straight to the driver: through SQLAlchemy the PRAGMA would open a transaction, and
    # SQLite ignores foreign_keys changes inside one.
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the SQLite connection is closed")
    driver.execute(f"PRAGMA foreign_keys={'ON' if enabled else 'OFF'}")


def _engine(engine_or_url: Engine | str) -> tuple[Engine, bool]:
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    return create_engine_for(DatabaseSettings(url=engine_or_url, pool_size=1)), True


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the database is at (empty before the first migration)."""
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def head_revisions(script_location: Path) -> tuple[str, ...]:
    """The head revisions of a migration tree."""
    script = ScriptDirectory.from_config(alembic_config(script_location))
    return tuple(sorted(script.get_heads()))


def schema_diff(
    engine_or_url: Engine | str,
    metadata: MetaData,
    script_location: Path | None = None,
    *,
    include_object: IncludeObject | None = None,
) -> list[Any]:
    """Alembic autogenerate's differences between ``metadata`` and the database schema.

    Empty means the migrations produce exactly the models. With ``script_location`` a
    database that is not at the tree's head also counts as a difference
    (``("not_at_head", current, heads)``), so "migrate, then diff" cannot pass on a
    database that skipped revisions.
    """
    engine, owned = _engine(engine_or_url)
    try:
        return _schema_diff(engine, metadata, script_location, include_object)
    finally:
        if owned:
            engine.dispose()


def _schema_diff(
    engine: Engine,
    metadata: MetaData,
    script_location: Path | None,
    include_object: IncludeObject | None,
) -> list[Any]:
    with engine.connect() as connection:
        opts: dict[str, Any] = {**COMPARE_OPTIONS, "target_metadata": metadata}
        if include_object is not None:
            opts["include_object"] = include_object
        context = MigrationContext.configure(connection, opts=opts)
        diff: list[Any] = list(compare_metadata(context, metadata))
        if script_location is not None:
            current, heads = current_revisions(connection), head_revisions(script_location)
            if current != heads:
                diff.insert(0, ("not_at_head", current, heads))
    return diff


def run_env(
    context: EnvironmentContext | ModuleType,
    target_metadata: MetaData | None = None,
    *,
    include_object: IncludeObject | None = None,
) -> None:
    """The whole of a service's ``env.py``: run its migrations online or offline.

    Online, it uses the connection that :func:`upgrade_to_head` put in
    ``config.attributes["connection"]``, or opens one from ``sqlalchemy.url`` (the
    ``alembic`` command line); offline (``--sql``) it renders SQL for that URL.
    """
    env = cast(EnvironmentContext, context)
    options: dict[str, Any] = {**COMPARE_OPTIONS, "target_metadata": target_metadata}
    if include_object is not None:
        options["include_object"] = include_object
    if env.is_offline_mode():
        url = env.config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("offline migrations need sqlalchemy.url")
        env.configure(url=url, literal_binds=True, render_as_batch=is_sqlite(url), **options)
        with env.begin_transaction():
            env.run_migrations()
        return
    connection = env.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_online(env, connection, options)
        return
    url = env.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("online migrations need a connection or sqlalchemy.url")
    engine = create_engine_for(DatabaseSettings(url=url, pool_size=1))
    try:
        with engine.connect() as own_connection:
            _run_online(env, own_connection, options)
    finally:
        engine.dispose()


def _run_online(env: EnvironmentContext, connection: Connection, options: dict[str, Any]) -> None:
    # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
    batch = connection.dialect.name == "sqlite"
    env.configure(connection=connection, render_as_batch=batch, **options)
    with env.begin_transaction():
        env.run_migrations()


def new_revision(
    script_location: Path,
    message: str,
    *,
    url: str | None = None,
    rev_id: str | None = None,
    autogenerate: bool = True,
) -> Path:
    """Write the next revision file of ``script_location`` and return its path.

    With ``autogenerate`` its operations are what the models (the metadata the tree's
    ``env.py`` passes to :func:`run_env`) need beyond the head schema, found by migrating
    ``url`` (a scratch SQLite file by default) to head first. Revision ids count up
    (``0001``, ``0002``...) unless ``rev_id`` is given.
    """
    script = ScriptDirectory.from_config(alembic_config(script_location))
    next_id = rev_id or f"{sum(1 for _ in script.walk_revisions()) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="pw-revision-") as scratch:
        engine, _ = _engine(url or f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            upgrade_to_head(engine, script_location)
            with _IN_PROCESS_LOCK, engine.connect() as connection:
                config = alembic_config(script_location)
                config.attributes["connection"] = connection
                written = command.revision(
                    config, message=message, autogenerate=autogenerate, rev_id=next_id
                )
        finally:
            engine.dispose()
    if not isinstance(written, Script):
        raise RuntimeError(f"alembic wrote no single revision: {written!r}")
    path = Path(written.path)
    _tidy(path)
    return path


def _tidy(path: Path) -> None:
    """Give a generated revision the repository's style (best effort: ruff may be absent)."""
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        return
    for args in (["check", "--fix-only", "--quiet"], ["format", "--quiet"]):
        subprocess.run([ruff, *args, str(path)], check=False, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m pushwarden.runtime.migrations``: ``upgrade`` or ``revision`` a tree."""
    parser = argparse.ArgumentParser(prog="python -m pushwarden.runtime.migrations")
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="apply pending migrations to a database")
    upgrade.add_argument("script_location", type=Path)
    upgrade.add_argument("url", help="SQLAlchemy URL of the database")
    revision = commands.add_parser("revision", help="write the next revision file")
    revision.add_argument("script_location", type=Path)
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--url", help="database to compare with (default: scratch SQLite)")
    revision.add_argument("--rev-id", help="revision id (default: next 4-digit number)")
    revision.add_argument("--empty", action="store_true", help="do not autogenerate")
    args = parser.parse_args(argv)
    if args.command == "upgrade":
        upgrade_to_head(args.url, args.script_location)
        return 0
    path = new_revision(
        args.script_location,
        args.message,
        url=args.url,
        rev_id=args.rev_id,
        autogenerate=not args.empty,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
