"""Statements every segmentation repository shares: bulk inserts and upserts as one
cached Core statement executed for every row, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from sqlalchemy import Table, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

# Rows per statement: well below both backends' bound-parameter limits for our widths.
CHUNK_ROWS: Final = 500


def chunks(rows: Sequence[Any], size: int = CHUNK_ROWS) -> Iterator[Sequence[Any]]:
    """``rows`` in slices of at most ``size``."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def dialect_of(session: AsyncSession) -> str:
    """``sqlite`` or ``postgresql``."""
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def _table_of(mapped: type[Any]) -> Table:
    table = inspect(mapped).local_table
    assert isinstance(table, Table)
    return table


async def insert_rows(
    session: AsyncSession, table: type[Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Plain inserts of ``rows`` (the caller knows they are new): one compiled statement
    executed for every row (the drivers' executemany), not a VALUES clause of literals
    compiled anew for each chunk (compiling cost more than inserting)."""
    if not rows:
        return
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    connection = await session.connection()
    await connection.execute(insert(_table_of(table)), [dict(row) for row in rows])


async def upsert_rows(
    session: AsyncSession,
    table: type[Any],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every other column of ``rows`` (all
    rows name the same columns), as :func:`insert_rows` does: one statement, every row."""
    if not rows:
        return
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    columns = [name for name in rows[0] if name not in keys]
    statement = insert(_table_of(table))
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: statement.excluded[name] for name in columns},
    )
    connection = await session.connection()
    await connection.execute(statement, [dict(row) for row in rows])
