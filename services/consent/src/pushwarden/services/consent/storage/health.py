"""Audience-health statistics: aggregates over devices and the ledger's non-personal
columns, and the population of users with a usable device in keyset-paged batches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, distinct, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.consent.domain.consent import Action, Scope, ScopeKind
from pushwarden.services.consent.domain.devices import DeviceStatus, Permission
from pushwarden.services.consent.domain.ledger import EntryKind
from pushwarden.services.consent.models import DeviceRow, LedgerEntryRow

# Users per batch of the population walk: one IN list per table, like CheckEligibility's.
USER_BATCH = 1000

_ALLOWING = [p.value for p in Permission if p.allows_push]
_UNIVERSAL_KEY = Scope(ScopeKind.ALL_MARKETING).key
_CATEGORY_PREFIX = f"{ScopeKind.CATEGORY.value}:"


@dataclass(frozen=True, slots=True)
class DeviceCounts:
    """The app's devices, counted."""

    active: int
    active_allowing_push: int
    invalid: int
    users_with_active: int


@dataclass(frozen=True, slots=True)
class OptOutCounts:
    """Opt-outs recorded in a period: universal (all marketing) ones, and per category
    (channel-specific and every-channel ones together)."""

    universal: int
    by_category: Mapping[str, int]


def _count_where(condition: Any) -> Any:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def category_of_scope_key(scope_key: str) -> str | None:
    """The category id of a CATEGORY scope key ("CATEGORY:PUSH:promos:" -> "promos"),
    None for any other scope. Exact for ids that contain ':' as well: the channel never
    does and a category scope's topic is always empty."""
    if not scope_key.startswith(_CATEGORY_PREFIX) or not scope_key.endswith(":"):
        return None
    _, _, rest = scope_key[len(_CATEGORY_PREFIX) :].partition(":")
    return rest[:-1] or None


class AudienceHealthRepository:
    """Read-only statistics of one app's audience."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def device_counts(self, app_id: str) -> DeviceCounts:
        """Active, active-and-allowing, invalid devices and users with an active device
        (one query)."""
        active = DeviceRow.status == DeviceStatus.ACTIVE.value
        result = await self._session.execute(
            select(
                _count_where(active),
                _count_where(active & DeviceRow.permission.in_(_ALLOWING)),
                _count_where(DeviceRow.status == DeviceStatus.INVALID.value),
                func.count(distinct(case((active, DeviceRow.user_id), else_=None))),
            ).where(DeviceRow.app_id == app_id)
        )
        active_n, allowing_n, invalid_n, users_n = result.one()
        return DeviceCounts(int(active_n), int(allowing_n), int(invalid_n), int(users_n))

    async def opt_outs(self, app_id: str, since: datetime, until: datetime) -> OptOutCounts:
        """Consent opt-outs recorded from ``since`` to ``until`` (both included), from the
        ledger's non-personal columns only, so erased users' payloads are not needed
        (one grouped query)."""
        entry = LedgerEntryRow
        result = await self._session.execute(
            select(entry.scope_key, func.count())
            .where(
                entry.app_id == app_id,
                entry.kind == EntryKind.CONSENT.value,
                entry.action == Action.OPT_OUT.value,
                entry.recorded_at >= since,
                entry.recorded_at <= until,
                or_(
                    entry.scope_key == _UNIVERSAL_KEY,
                    entry.scope_key.startswith(_CATEGORY_PREFIX, autoescape=True),
                ),
            )
            .group_by(entry.scope_key)
        )
        universal = 0
        by_category: dict[str, int] = {}
        for scope_key, count in result.all():
            if scope_key == _UNIVERSAL_KEY:
                universal += int(count)
                continue
            category_id = category_of_scope_key(str(scope_key))
            if category_id is not None:
                by_category[category_id] = by_category.get(category_id, 0) + int(count)
        return OptOutCounts(universal, by_category)

    async def users_with_usable_device(
        self, app_id: str, batch: int = USER_BATCH
    ) -> AsyncIterator[list[str]]:
        """Every user with an active device that allows pushes, ordered by id, in
        batches of at most ``batch`` ids (keyset paging: one query per batch, nothing
        held beyond the current batch)."""
        after: str | None = None
        while True:
            query = (
                select(DeviceRow.user_id)
                .distinct()
                .where(
                    DeviceRow.app_id == app_id,
                    DeviceRow.status == DeviceStatus.ACTIVE.value,
                    DeviceRow.permission.in_(_ALLOWING),
                )
            )
            if after is not None:
                query = query.where(DeviceRow.user_id > after)
            users = list(
                await self._session.scalars(query.order_by(DeviceRow.user_id).limit(batch))
            )
            if not users:
                return
            yield users
            if len(users) < batch:
                return
            after = users[-1]
