"""Migrations: applied programmatically, and autogenerate can tell models and schema apart,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Column, Engine, ForeignKey, Integer, MetaData, String, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pushwarden.runtime.db import conventional_metadata, create_engine_for
from pushwarden.runtime.migrations import (
    alembic_config,
    current_revisions,
    head_revisions,
    new_revision,
    schema_diff,
    upgrade_to_head,
)
from pushwarden.runtime.settings import DatabaseSettings

SCRIPTS = Path(__file__).parent / "runtime_sample_migrations"


class Base(DeclarativeBase):
    metadata = conventional_metadata()


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)


class Pet(Base):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
    name: Mapped[str] = mapped_column(String(50))
    species: Mapped[str] = mapped_column(String(20), server_default="cat", index=True)


def models_with_an_extra_column() -> MetaData:
    """The same models as the migrations, plus one column no migration adds."""
    metadata = conventional_metadata()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["pets"].append_column(Column("nickname", String(30), nullable=True))
    return metadata


@pytest.fixture
def engine(any_database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=2))
    yield engine
    engine.dispose()


def test_upgrade_applies_every_revision(engine: Engine) -> None:
    upgrade_to_head(engine, SCRIPTS)
    tables = set(inspect(engine).get_table_names())
    assert {"owners", "pets", "alembic_version"} <= tables
    assert "species" in {c["name"] for c in inspect(engine).get_columns("pets")}
    with engine.connect() as connection:
        assert current_revisions(connection) == head_revisions(SCRIPTS) == ("0003",)


def test_upgrade_is_idempotent_and_accepts_a_url(any_database_url: str) -> None:
    upgrade_to_head(any_database_url, SCRIPTS)
    upgrade_to_head(any_database_url, SCRIPTS)
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
    with engine.connect() as connection:
        assert current_revisions(connection) == ("0003",)
    engine.dispose()


def test_models_and_migrated_schema_do_not_differ(engine: Engine) -> None:
    upgrade_to_head(engine, SCRIPTS)
    assert schema_diff(engine, Base.metadata, SCRIPTS) == []


def test_an_unmigrated_column_is_a_difference(engine: Engine) -> None:
    upgrade_to_head(engine, SCRIPTS)
    diff = schema_diff(engine, models_with_an_extra_column(), SCRIPTS)
    assert [(op[0], op[2], op[3].name) for op in diff] == [("add_column", "pets", "nickname")]


def test_a_database_behind_head_is_a_difference(engine: Engine) -> None:
    upgrade_to_head(engine, SCRIPTS, revision="0001")
    diff = schema_diff(engine, Base.metadata, SCRIPTS)
    assert diff[0] == ("not_at_head", ("0001",), ("0003",))
    assert any(op[0] == "add_column" and op[3].name == "species" for op in diff[1:])


REPLICA = """
import sys, time
from pathlib import Path
from pushwarden.runtime.migrations import upgrade_to_head
url, scripts, ready, go = sys.argv[1:]
Path(ready).touch()  # imports done: what is left is the race itself
deadline = time.monotonic() + 60
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
upgrade_to_head(url, Path(scripts))
"""


def test_rebuilding_a_referenced_table_keeps_rows_and_foreign_keys(engine: Engine) -> None:
    # 0003 makes SQLite's batch mode drop and recreate owners while pets refer to it.
    upgrade_to_head(engine, SCRIPTS, revision="0002")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO owners (id, name) VALUES (1, 'ada')"))
        connection.execute(text("INSERT INTO pets (id, owner_id, name) VALUES (1, 1, 'tom')"))
    upgrade_to_head(engine, SCRIPTS)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT owner_id, name FROM pets")).all() == [(1, "tom")]
        if engine.dialect.name == "sqlite":
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with pytest.raises(IntegrityError):
            connection.execute(text("INSERT INTO pets (id, owner_id, name) VALUES (2, 9, 'x')"))
    assert schema_diff(engine, Base.metadata, SCRIPTS) == []


def test_replicas_starting_together_do_not_race(any_database_url: str, tmp_path: Path) -> None:
    # This process and a second one migrate at the same instant; on PostgreSQL, without
    # the advisory lock, one of them fails with "already exists".
    ready, go = tmp_path / "ready", tmp_path / "go"
    replica = subprocess.Popen(
        [sys.executable, "-c", REPLICA, any_database_url, str(SCRIPTS), str(ready), str(go)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    upgrade_to_head(any_database_url, SCRIPTS)
    code, (_, err) = replica.wait(timeout=60), replica.communicate()
    assert code == 0, err
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
    assert schema_diff(engine, Base.metadata, SCRIPTS) == []
    engine.dispose()


def test_offline_mode_renders_sql(tmp_path: Path) -> None:
    # Offline SQL for PostgreSQL: SQLite's batch mode has to reflect a live table.
    config = alembic_config(SCRIPTS, url="postgresql+psycopg://nobody@db.invalid/pushwarden")
    output = tmp_path / "upgrade.sql"
    with output.open("w") as buffer:
        config.output_buffer = buffer
        command.upgrade(config, "head", sql=True)
    sql = output.read_text()
    assert "CREATE TABLE owners" in sql
    assert "CREATE INDEX ix_pets_species" in sql
    assert "ALTER TABLE owners ALTER COLUMN name TYPE VARCHAR(80)" in sql


SAMPLE_MODELS = """
from sqlalchemy import Column, String
from pushwarden.runtime.db import conventional_metadata
from sqlalchemy import Table, Integer, ForeignKey

metadata = conventional_metadata()
Table("owners", metadata, Column("id", Integer, primary_key=True),
      Column("name", String(80), nullable=False, unique=True))
Table("pets", metadata, Column("id", Integer, primary_key=True),
      Column("owner_id", Integer, ForeignKey("owners.id"), nullable=False),
      Column("name", String(50), nullable=False),
      Column("species", String(20), nullable=False, server_default="cat", index=True),
      Column("nickname", String(30), nullable=True))
"""


def test_the_next_revision_is_written_from_the_models(
    any_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"pw_sample_models_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{module}.py").write_text(SAMPLE_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    tree = tmp_path / "migrations"
    shutil.copytree(SCRIPTS, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "env.py").write_text(
        f"from alembic import context\nfrom pushwarden.runtime.migrations import run_env\n"
        f"from {module} import metadata\nrun_env(context, metadata)\n"
    )
    written = new_revision(tree, "pet nicknames")
    assert written.name == "0004_pet_nicknames.py"
    body = written.read_text()
    assert "add_column" in body
    assert "nickname" in body
    upgrade_to_head(any_database_url, tree)
    engine = create_engine_for(DatabaseSettings(url=any_database_url, pool_size=1))
    models = importlib.import_module(module).metadata
    assert schema_diff(engine, models, tree) == []
    engine.dispose()
