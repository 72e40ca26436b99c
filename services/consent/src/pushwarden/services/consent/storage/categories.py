"""The categories repository: rows of ``categories`` in and out as domain objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.consent.domain.categories import (
    Category,
    CategoryKind,
    CategorySpec,
    DefaultState,
)
from pushwarden.services.consent.models import CategoryRow, LedgerEntryRow

_ONE = select(*CategoryRow.__table__.columns).where(
    CategoryRow.app_id == bindparam("app_id"), CategoryRow.category_id == bindparam("category_id")
)

_ONE_WITH_HEAD = _ONE.add_columns(
    select(func.max(LedgerEntryRow.sequence)).scalar_subquery().label("ledger_head")
)


def _category(row: CategoryRow | Row[Any]) -> Category:
    return Category(
        app_id=row.app_id,
        category_id=row.category_id,
        kind=CategoryKind(row.kind),
        default_state=DefaultState(row.default_state),
        user_can_opt_out=row.user_can_opt_out,
        display_name=row.display_name,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class CategoryRepository:
    """Categories of every app, keyed by (app, category id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get_for_update(self, app_id: str, category_id: str) -> Category | None:
        """One category, locked against concurrent writers until the transaction ends."""
        row = await self._session.scalar(
            select(CategoryRow)
            .where(CategoryRow.app_id == app_id, CategoryRow.category_id == category_id)
            .with_for_update()
        )
        return None if row is None else _category(row)

    async def insert(self, spec: CategorySpec, now: datetime) -> bool:
        """Insert a new category; False when a concurrent writer inserted it first."""
        values = {
            "app_id": spec.app_id,
            "category_id": spec.category_id,
            "kind": spec.kind.value,
            "default_state": spec.default_state.value,
            "user_can_opt_out": spec.user_can_opt_out,
            "display_name": spec.display_name,
            "description": spec.description,
            "created_at": now,
            "updated_at": now,
        }
        inserted = await insert_ignoring_duplicates(self._session, CategoryRow, [values])
        return inserted == 1

    async def update_settings(self, spec: CategorySpec, now: datetime) -> None:
        """Overwrite the mutable fields (never the kind)."""
        row = await self._session.get(CategoryRow, (spec.app_id, spec.category_id))
        if row is None:
            raise LookupError(f"category {spec.category_id!r} vanished inside its transaction")
        row.default_state = spec.default_state.value
        row.user_can_opt_out = spec.user_can_opt_out
        row.display_name = spec.display_name
        row.description = spec.description
        row.updated_at = now
        await self._session.flush()

    async def list_page(
        self, app_id: str, kind: CategoryKind | None, after: str | None, limit: int
    ) -> list[Category]:
        """Up to ``limit`` categories of the app ordered by id, after ``after``."""
        query = select(CategoryRow).where(CategoryRow.app_id == app_id)
        if kind is not None:
            query = query.where(CategoryRow.kind == kind.value)
        if after is not None:
            query = query.where(CategoryRow.category_id > after)
        rows = await self._session.scalars(query.order_by(CategoryRow.category_id).limit(limit))
        return [_category(row) for row in rows]

    async def all_of_app(self, app_id: str) -> list[Category]:
        """Every category of the app, ordered by id."""
        rows = await self._session.scalars(
            select(CategoryRow)
            .where(CategoryRow.app_id == app_id)
            .order_by(CategoryRow.category_id)
        )
        return [_category(row) for row in rows]

    async def get(self, app_id: str, category_id: str) -> Category | None:
        """One category, or None (read as plain columns)."""
        row = (
            await self._session.execute(_ONE, {"app_id": app_id, "category_id": category_id})
        ).one_or_none()
        return None if row is None else _category(row)

    async def get_with_ledger_head(
        self, app_id: str, category_id: str
    ) -> tuple[Category, int] | None:
        """One category and the whole ledger's latest sequence (0 when empty), in one
        statement (every eligibility batch asks for both), or None without the category."""
        connection = await self._session.connection()
        row = (
            await connection.execute(_ONE_WITH_HEAD, {"app_id": app_id, "category_id": category_id})
        ).one_or_none()
        return None if row is None else (_category(row), int(row.ledger_head or 0))

    async def get_many(self, app_id: str, category_ids: Sequence[str]) -> dict[str, Category]:
        """The categories among ``category_ids`` that exist, by id (one query)."""
        if not category_ids:
            return {}
        rows = await self._session.scalars(
            select(CategoryRow).where(
                CategoryRow.app_id == app_id, CategoryRow.category_id.in_(list(category_ids))
            )
        )
        return {row.category_id: _category(row) for row in rows}
