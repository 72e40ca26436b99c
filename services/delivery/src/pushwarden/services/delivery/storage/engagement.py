"""Assignments, engagement events and opt-outs: written in batches (INSERT ... ON
CONFLICT DO NOTHING, one cached statement for every row, so a resend writes nothing),
read back for comparison and export, and deleted per user on erasure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, tuple_, union
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates, insert_returning_new
from pushwarden.services.delivery.domain.engagement import (
    EngagementEvent,
    EngagementKind,
    NewAssignment,
    Subject,
)
from pushwarden.services.delivery.models import (
    AssignmentRow,
    EngagementRow,
    OptOutRow,
    SendRow,
)

# Keys per IN list.
_READ_CHUNK = 5000


class AssignmentRepository:
    """Assignments keyed by (app, subject, key)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert_new(
        self, app_id: str, subject: Subject, items: Sequence[NewAssignment], now: datetime
    ) -> set[str]:
        """Store the assignments not recorded before; returns the keys this call inserted."""
        rows = [
            {
                "app_id": app_id,
                "subject_kind": subject.kind.value,
                "subject_id": subject.subject_id,
                "assignment_key": item.key,
                "user_id": item.user_id,
                "variant_id": item.variant_id,
                "holdout": item.holdout,
                "assigned_at": item.assigned_at,
                "recorded_at": now,
            }
            for item in items
        ]
        return set(await insert_returning_new(self._session, AssignmentRow, rows, "assignment_key"))

    async def get_many(
        self, app_id: str, subject: Subject, keys: Sequence[str]
    ) -> dict[str, NewAssignment]:
        """The recorded assignments of ``keys``, by key."""
        found: dict[str, NewAssignment] = {}
        for start in range(0, len(keys), _READ_CHUNK):
            rows = await self._session.scalars(
                select(AssignmentRow).where(
                    AssignmentRow.app_id == app_id,
                    AssignmentRow.subject_kind == subject.kind.value,
                    AssignmentRow.subject_id == subject.subject_id,
                    AssignmentRow.assignment_key.in_(list(keys[start : start + _READ_CHUNK])),
                )
            )
            for row in rows:
                found[row.assignment_key] = NewAssignment(
                    key=row.assignment_key,
                    user_id=row.user_id,
                    variant_id=row.variant_id,
                    holdout=row.holdout,
                    assigned_at=row.assigned_at,
                )
        return found

    async def erase_user(self, app_id: str, user_id: str, before: datetime | None) -> int:
        """Delete the user's assignments recorded before ``before`` (all when None)."""
        query = delete(AssignmentRow).where(
            AssignmentRow.app_id == app_id, AssignmentRow.user_id == user_id
        )
        if before is not None:
            query = query.where(AssignmentRow.recorded_at < before)
        result = await self._session.execute(
            query.returning(AssignmentRow.assignment_key).execution_options(
                synchronize_session=False
            )
        )
        return len(result.all())


@dataclass(frozen=True, slots=True)
class SendOwner:
    """Who a send went to, and what it was about (for an engagement event's checks)."""

    user_id: str
    category_id: str
    topic_id: str


class EngagementRepository:
    """Engagement events keyed by (app, event id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def send_owners(self, app_id: str, send_ids: Sequence[str]) -> dict[str, SendOwner]:
        """The recipient and category of each known send among ``send_ids``."""
        owners: dict[str, SendOwner] = {}
        ids = sorted(set(send_ids))
        for start in range(0, len(ids), _READ_CHUNK):
            rows = await self._session.execute(
                select(
                    SendRow.send_id, SendRow.user_id, SendRow.category_id, SendRow.topic_id
                ).where(
                    SendRow.app_id == app_id, SendRow.send_id.in_(ids[start : start + _READ_CHUNK])
                )
            )
            for send_id, user_id, category_id, topic_id in rows:
                owners[send_id] = SendOwner(user_id, category_id, topic_id)
        return owners

    async def insert_new(
        self,
        app_id: str,
        events: Sequence[tuple[EngagementEvent, int | None]],
        now: datetime,
    ) -> set[str]:
        """Store events (each with the local hour of an open, or None) not recorded
        before; returns the ids this call inserted (first write wins)."""
        rows = [
            {
                "app_id": app_id,
                "event_id": event.event_id,
                "kind": event.kind.value,
                "user_id": event.user_id,
                "send_id": event.send_id,
                "device_id": event.device_id,
                "occurred_at": event.occurred_at,
                "value": event.value,
                "currency": event.currency,
                "conversion_name": event.conversion_name,
                "local_hour": local_hour,
                "recorded_at": now,
            }
            for event, local_hour in events
        ]
        return set(await insert_returning_new(self._session, EngagementRow, rows, "event_id"))

    async def page_of_user(
        self, app_id: str, user_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[EngagementEvent]:
        """Up to ``limit`` of the user's events after ``after`` (occurred_at, event id),
        oldest first."""
        query = select(EngagementRow).where(
            EngagementRow.app_id == app_id, EngagementRow.user_id == user_id
        )
        if after is not None:
            query = query.where(tuple_(EngagementRow.occurred_at, EngagementRow.event_id) > after)
        rows = await self._session.scalars(
            query.order_by(EngagementRow.occurred_at, EngagementRow.event_id).limit(limit)
        )
        return [
            EngagementEvent(
                event_id=row.event_id,
                kind=EngagementKind(row.kind),
                user_id=row.user_id,
                send_id=row.send_id,
                device_id=row.device_id,
                occurred_at=row.occurred_at,
                value=row.value,
                currency=row.currency,
                conversion_name=row.conversion_name,
            )
            for row in rows
        ]

    async def erase_user(self, app_id: str, user_id: str, before: datetime | None) -> int:
        """Delete the user's events recorded before ``before`` (all when None)."""
        query = delete(EngagementRow).where(
            EngagementRow.app_id == app_id, EngagementRow.user_id == user_id
        )
        if before is not None:
            query = query.where(EngagementRow.recorded_at < before)
        result = await self._session.execute(
            query.returning(EngagementRow.event_id).execution_options(synchronize_session=False)
        )
        return len(result.all())


@dataclass(frozen=True, slots=True)
class OptOut:
    """A marketing opt-out from consent's change feed."""

    app_id: str
    sequence: int
    user_id: str
    scope_kind: str
    opted_out_at: datetime


class OptOutRepository:
    """Marketing opt-outs keyed by (app, feed sequence)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def insert_new(self, opt_outs: Sequence[OptOut]) -> int:
        """Store opt-outs not seen before (a replayed feed batch writes nothing)."""
        rows = [
            {
                "app_id": item.app_id,
                "sequence": item.sequence,
                "user_id": item.user_id,
                "scope_kind": item.scope_kind,
                "opted_out_at": item.opted_out_at,
            }
            for item in opt_outs
        ]
        return await insert_ignoring_duplicates(self._session, OptOutRow, rows)

    async def erase_user(self, app_id: str, user_id: str, before: datetime | None) -> int:
        """Delete the user's opt-outs made before ``before`` (all when None)."""
        query = delete(OptOutRow).where(OptOutRow.app_id == app_id, OptOutRow.user_id == user_id)
        if before is not None:
            query = query.where(OptOutRow.opted_out_at < before)
        result = await self._session.execute(
            query.returning(OptOutRow.sequence).execution_options(synchronize_session=False)
        )
        return len(result.all())


async def users_after(
    session: AsyncSession, after: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    """Distinct (app, user) pairs delivery holds anything for (sends, assignments,
    engagement, opt-outs), in order, after ``after``: what an erasure resync checks."""
    held = union(
        *(
            select(table.app_id.label("app_id"), table.user_id.label("user_id")).where(
                tuple_(table.app_id, table.user_id) > after
            )
            for table in (SendRow, AssignmentRow, EngagementRow, OptOutRow)
        )
    ).subquery()
    rows = await session.execute(
        select(held.c.app_id, held.c.user_id).order_by(held.c.app_id, held.c.user_id).limit(limit)
    )
    return [(app_id, user_id) for app_id, user_id in rows.all()]
