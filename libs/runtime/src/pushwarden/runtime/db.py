"""Database engine, sessions and unit of work (SQLAlchemy 2.x), for SQLite and PostgreSQL.

SQLite is the zero-setup default: a file whose directory is created on start, in WAL mode
with foreign keys enforced and ``synchronous=FULL`` on every connection. PostgreSQL is the
production database, reached through psycopg 3 with a small pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pushwarden.runtime.config import ConfigError, exit_with_config_error
from pushwarden.runtime.settings import DatabaseSettings

# Constraint names that are the same on every backend, so Alembic can drop or alter them
# by name and autogenerate compares like with like.
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
PG_CONNECT_TIMEOUT_S: Final = 10

# Every SQLite connection gets these; WAL lets readers run beside the one writer.
# busy_timeout comes first so that switching a new file to WAL also waits for a lock.
SQLITE_PRAGMAS: Final[tuple[tuple[str, str], ...]] = (
    ("busy_timeout", str(SQLITE_BUSY_TIMEOUT_MS)),
    ("journal_mode", "WAL"),
    ("foreign_keys", "ON"),
    ("synchronous", "FULL"),
)

SqliteBegin = Literal["DEFERRED", "IMMEDIATE"]
# Execution option that picks how a SQLite transaction begins (ignored on PostgreSQL).
SQLITE_BEGIN_OPTION: Final = "pushwarden_sqlite_begin"


class DatabaseUnavailable(ConfigError):
    """The configured database cannot be reached or created; one line, like a config error."""


def conventional_metadata() -> MetaData:
    """A fresh MetaData with :data:`NAMING_CONVENTION`, for a service's declarative base.

    A base class made at run time is not a valid base for mypy, so services declare theirs::

        class Base(DeclarativeBase):
            metadata = conventional_metadata()
    """
    return MetaData(naming_convention=NAMING_CONVENTION)


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL (relative to the working directory), or None."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine_for(
    settings: DatabaseSettings, *, sqlite_begin: SqliteBegin = "DEFERRED"
) -> Engine:
    """An engine for ``settings.url``: a SQLite file (directory created) or PostgreSQL.

    On SQLite every transaction starts with an explicit ``BEGIN`` (``sqlite_begin``, or the
    connection's :data:`SQLITE_BEGIN_OPTION` execution option): :func:`unit_of_work` asks
    for ``IMMEDIATE`` so that two writers that read first queue behind each other (within
    ``busy_timeout``) instead of one failing with "database is locked" when it tries to
    upgrade its read lock; readers stay ``DEFERRED`` and never block writers. Raises
    ``OSError`` when the SQLite directory cannot be made.
    """
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings, sqlite_begin)
    return create_engine(
        url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        # pool_size is the whole budget: the server's 100 connections are shared by every
        # replica of every service.
        max_overflow=0,
        pool_timeout=30,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S},
    )


def _sqlite_engine(url: URL, settings: DatabaseSettings, begin: SqliteBegin) -> Engine:
    path = sqlite_path(url)
    if path is None:
        raise ValueError(f"in-memory SQLite is not supported: {url}")
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=settings.echo,
        pool_size=settings.pool_size,
        max_overflow=0,
        pool_timeout=30,
        # The driver's own transaction handling issues BEGIN lazily and only before DML;
        # turning it off lets the "begin" hook below start every transaction explicitly.
        connect_args={"isolation_level": None, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _apply_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for name, value in SQLITE_PRAGMAS:
                cursor.execute(f"PRAGMA {name}={value}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, begin)
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be DEFERRED or IMMEDIATE, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def check_connection(engine: Engine, *, env_name: str) -> None:
    """Open one connection and run ``SELECT 1``; raise :class:`DatabaseUnavailable`
    (``<env_name>: cannot connect: <reason>``) when that fails."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseUnavailable(env_name, f"cannot connect: {reason}") from exc


def connect(settings: DatabaseSettings, *, env_name: str) -> Engine:
    """Create the engine and check that it connects; :class:`DatabaseUnavailable` if not."""
    try:
        engine = create_engine_for(settings)
    except OSError as exc:
        raise DatabaseUnavailable(
            env_name, f"cannot connect: cannot create the database directory: {exc}"
        ) from exc
    try:
        check_connection(engine, env_name=env_name)
    except DatabaseUnavailable:
        engine.dispose()
        raise
    return engine


def connect_or_exit(settings: DatabaseSettings, *, env_name: str) -> Engine:
    """:func:`connect`, or print the one-line reason on stderr and exit with status 2."""
    try:
        return connect(settings, env_name=env_name)
    except DatabaseUnavailable as exc:
        exit_with_config_error(exc)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """A session whose work is rolled back unless the block calls ``session.commit()``.

    Leaving the block (normally or by an exception) rolls back whatever was not committed
    and closes the session. Unless ``read_only``, a SQLite transaction takes the write lock
    when it begins, so a read-then-write cannot lose a race to another writer.
    """
    session = factory()
    try:
        if not read_only:
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        yield session
    finally:
        try:
            session.rollback()
        finally:
            session.close()
