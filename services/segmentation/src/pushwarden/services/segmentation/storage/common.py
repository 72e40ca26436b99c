"""Statements every segmentation repository shares: chunked bulk inserts and upserts
that compile to one multi-row statement per chunk on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

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


async def insert_rows(
    session: AsyncSession, table: type[Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Plain multi-row inserts of ``rows`` (the caller knows they are new)."""
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    for chunk in chunks(rows):
        await session.execute(insert(table).values(list(chunk)))


async def upsert_rows(
    session: AsyncSession,
    table: type[Any],
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
) -> None:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of every other column of ``rows``."""
    if not rows:
        return
    insert = pg_insert if dialect_of(session) == "postgresql" else sqlite_insert
    columns = [name for name in rows[0] if name not in keys]
    for chunk in chunks(rows):
        statement = insert(table).values(list(chunk))
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: statement.excluded[name] for name in columns},
            )
        )
