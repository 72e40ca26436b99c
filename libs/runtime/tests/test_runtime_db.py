"""Database engine: SQLite pragmas really in effect, FKs enforced, PostgreSQL reachable,
unit of work rolls back unless committed, unreachable databases stop the process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import (
    Engine,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool, QueuePool

from pushwarden.runtime.db import (
    DatabaseUnavailable,
    UtcDateTime,
    check_connection,
    connect,
    connect_or_exit,
    conventional_metadata,
    create_async_engine_for,
    create_engine_for,
    insert_ignoring_duplicates,
    session_factory,
    unit_of_work,
)
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.runtime.testing import (
    admin_url,
    postgres_unavailable_reason,
    throwaway_postgres_database,
)

ENV = "PUSHWARDEN_SAMPLE_DATABASE_URL"


class Base(DeclarativeBase):
    metadata = conventional_metadata()


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Pet(Base):
    __tablename__ = "pets"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    name: Mapped[str] = mapped_column(String(50))


class Stamp(Base):
    __tablename__ = "stamps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class Counter(Base):
    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


@pytest.fixture
def engine(any_database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=2))
    Base.metadata.create_all(engine)  # a test of the models, not of migrations
    try:
        yield engine
    finally:
        engine.dispose()


def test_sqlite_file_and_directory_are_created(tmp_path: Path) -> None:
    path = tmp_path / "var" / "nested" / "sample.db"
    engine = connect(DatabaseSettings(url=f"sqlite:///{path}"), env_name=ENV)
    engine.dispose()
    assert path.is_file()


def test_sqlite_pragmas_are_in_effect_on_every_connection(tmp_path: Path) -> None:
    engine = create_engine_for(DatabaseSettings(url=f"sqlite:///{tmp_path}/p.db", pool_size=2))
    # Hold two connections at once so the pool must open a second one.
    with engine.connect() as first, engine.connect() as second:
        for connection in (first, second):
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
            assert pragma("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()


def test_postgresql_pool_is_small_and_pre_pinged(any_database_url: str) -> None:
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=3))
    try:
        check_connection(engine, env_name=ENV)
        assert isinstance(engine.pool, QueuePool)
        assert engine.pool.size() == 3
        if engine.dialect.name == "postgresql":
            assert engine.dialect.driver == "psycopg"
            assert engine.pool._pre_ping
    finally:
        engine.dispose()


@pytest.fixture
async def async_engine(engine: Engine, any_database_url: str) -> AsyncIterator[AsyncEngine]:
    """The asyncio engine the services run on, over the same (created) tables."""
    async_engine = create_async_engine_for(DatabaseSettings(url=any_database_url, pool_size=2))
    try:
        yield async_engine
    finally:
        await async_engine.dispose()


async def test_the_async_engine_applies_the_same_pragmas(tmp_path: Path) -> None:
    engine = create_async_engine_for(DatabaseSettings(url=f"sqlite:///{tmp_path}/a.db"))
    try:
        async with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                pragma = connection.exec_driver_sql
                assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
                assert (await pragma("PRAGMA foreign_keys")).scalar() == 1
                assert (await pragma("PRAGMA synchronous")).scalar() == 2
                assert (await pragma("PRAGMA busy_timeout")).scalar() == 5000
    finally:
        await engine.dispose()


async def test_foreign_keys_are_enforced(async_engine: AsyncEngine) -> None:
    factory = session_factory(async_engine)
    async with unit_of_work(factory) as session:
        session.add(Pet(owner_id=999, name="ghost"))
        with pytest.raises(IntegrityError):
            await session.flush()


async def add_then_fail(factory: async_sessionmaker[AsyncSession]) -> None:
    async with unit_of_work(factory) as session:
        session.add(Owner(name="failed"))
        await session.flush()
        session.add(Owner(name="kept"))
        await session.flush()  # duplicate name: the whole unit is rolled back


async def test_unit_of_work_rolls_back_unless_committed(async_engine: AsyncEngine) -> None:
    factory = session_factory(async_engine)
    async with unit_of_work(factory) as session:
        session.add(Owner(name="forgotten"))
        await session.flush()
    async with unit_of_work(factory) as session:
        session.add(Owner(name="kept"))
        await session.commit()
        session.add(Owner(name="after-commit"))
    with pytest.raises(IntegrityError):
        await add_then_fail(factory)
    async with unit_of_work(factory) as session:
        assert (await session.scalars(select(Owner.name))).all() == ["kept"]


async def test_insert_ignoring_duplicates_counts_what_it_inserted(
    async_engine: AsyncEngine,
) -> None:
    factory = session_factory(async_engine)
    table = Owner
    async with unit_of_work(factory) as session:
        assert await insert_ignoring_duplicates(session, table, [{"id": 1, "name": "a"}]) == 1
        rows = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
        assert await insert_ignoring_duplicates(session, table, rows) == 2
        await session.commit()


async def test_utc_datetime_round_trips_aware_instants(async_engine: AsyncEngine) -> None:
    async with async_engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    factory = session_factory(async_engine)
    instant = datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    async with unit_of_work(factory) as session:
        session.add(Stamp(id=1, at=instant))
        await session.commit()
    async with unit_of_work(factory, read_only=True) as session:
        stored = (await session.get_one(Stamp, 1)).at
    assert stored == instant
    assert stored.tzinfo == UTC
    async with unit_of_work(factory) as session:
        session.add(Stamp(id=2, at=datetime(2026, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            await session.flush()


def test_naming_convention_names_constraints(engine: Engine) -> None:
    names = {c.name for c in Base.metadata.tables["pets"].constraints}
    assert {"pk_pets", "uq_pets_owner_id_name", "fk_pets_owner_id_owners"} <= names
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            found = connection.execute(
                text("SELECT conname FROM pg_constraint WHERE conrelid = 'pets'::regclass")
            ).scalars()
            assert {"pk_pets", "uq_pets_owner_id_name", "fk_pets_owner_id_owners"} <= set(found)


async def test_sqlite_read_then_write_transactions_queue_instead_of_failing(
    tmp_path: Path,
) -> None:
    # Deferred transactions that read and then write fail with "database is locked" when
    # they race; BEGIN IMMEDIATE makes them wait for each other instead.
    url = f"sqlite:///{tmp_path}/c.db"
    sync_engine = create_engine_for(DatabaseSettings(url=url))
    Base.metadata.create_all(sync_engine)
    sync_engine.dispose()
    engine = create_async_engine_for(DatabaseSettings(url=url, pool_size=4))
    factory = session_factory(engine)
    async with unit_of_work(factory) as session:
        session.add(Counter(id=1, value=0))
        await session.commit()

    async def increment() -> None:
        for _ in range(15):
            async with unit_of_work(factory) as session:
                counter = await session.get_one(Counter, 1)
                counter.value += 1
                await session.commit()

    await asyncio.gather(*(increment() for _ in range(4)))
    async with unit_of_work(factory) as session:
        total = await session.scalar(select(func.sum(Counter.value)))
    await engine.dispose()
    assert total == 60


def _refusing_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


def test_unreachable_postgresql_is_one_line_naming_the_variable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_refusing_port()}/nowhere"
    with pytest.raises(DatabaseUnavailable) as info:
        connect(DatabaseSettings(url=url), env_name=ENV)
    message = str(info.value)
    assert message.startswith(f"{ENV}: cannot connect: ")
    assert "\n" not in message


def test_uncreatable_sqlite_directory_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DatabaseUnavailable) as info:
        connect(DatabaseSettings(url=f"sqlite:///{blocker}/sub/x.db"), env_name=ENV)
    message = str(info.value)
    assert message.startswith(f"{ENV}: cannot connect: cannot create the database directory")
    assert "\n" not in message


def test_connect_or_exit_exits_2_with_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        connect_or_exit(DatabaseSettings(url=f"sqlite:///{blocker}/x.db"), env_name=ENV)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{ENV}: cannot connect: ")
    assert err.count("\n") == 1


def test_database_fixtures_mark_tests_as_storage(
    database_url: str, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("storage") is not None
    assert database_url.startswith(("sqlite:///", "postgresql+psycopg://"))


def test_throwaway_postgres_database_is_dropped_afterwards() -> None:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    with throwaway_postgres_database() as url:
        name = make_url(url).database
        engine = connect(DatabaseSettings(url=url, pool_size=1), env_name=ENV)
        engine.dispose()
    admin = create_engine(admin_url(), poolclass=NullPool)
    with admin.connect() as connection:
        left = connection.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": name}
        ).scalar()
    admin.dispose()
    assert left == 0


PLUGIN_PROBE = """
def test_backend(any_database_url):
    assert any_database_url
"""


@pytest.mark.parametrize(
    ("switch", "outcome", "status"),
    [
        ({"PUSHWARDEN_TEST_DB": "both"}, "1 passed, 1 skipped", 0),
        ({"PUSHWARDEN_TEST_DB": "postgres"}, "1 error", 1),
    ],
)
def test_an_unreachable_postgres_is_skipped_unless_asked_for(
    tmp_path: Path, switch: dict[str, str], outcome: str, status: int
) -> None:
    # CI sets PUSHWARDEN_TEST_DB=postgres: there a missing server must fail, not skip
    # (the SQLite case is make test's, deselected there).
    (tmp_path / "test_probe.py").write_text(PLUGIN_PROBE)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PUSHWARDEN_TEST_PG_URL": f"postgresql+psycopg://postgres@127.0.0.1:{_refusing_port()}/x",
        **switch,
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome in run.stdout, run.stdout + run.stderr
    assert run.returncode == status


@pytest.mark.parametrize(
    ("switch", "ran"),
    [
        ({}, ["sqlite"]),
        ({"PUSHWARDEN_TEST_DB": "postgres"}, ["postgres"]),
        ({"PUSHWARDEN_TEST_DB": "both"}, ["sqlite", "postgres"]),
    ],
)
def test_each_run_keeps_the_cases_of_its_backends(
    tmp_path: Path, switch: dict[str, str], ran: list[str]
) -> None:
    # make test and make test-pg each run one case of an any_database_url test, so CI,
    # which runs both, runs every case once.
    (tmp_path / "test_probe.py").write_text(PLUGIN_PROBE)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **switch}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    collected = [line for line in run.stdout.splitlines() if "::test_backend[" in line]
    assert collected == [f"test_probe.py::test_backend[{backend}]" for backend in ran], (
        run.stdout + run.stderr
    )
