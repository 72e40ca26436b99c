"""The events repository: events and their typed properties, and the event stream.

The ``events`` table is the stream: an event's ``sequence`` comes from a counter bumped
under the unit of work's append lock, which is held until the transaction commits. A
sequence is therefore only handed out after every smaller one has committed (or rolled
back, leaving no row), so a follower that reads ``sequence > cursor`` in order sees
every event exactly once and in commit order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.segmentation.domain.values import Value
from pushwarden.services.segmentation.models import (
    EventPropertyItemRow,
    EventPropertyRow,
    EventRow,
    ServiceStateRow,
)
from pushwarden.services.segmentation.storage.common import chunks, insert_rows

SEQUENCE_COUNTER = "event_sequence"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store (checked)."""

    event_id: str
    user_id: str
    name: str
    occurred_at: datetime
    properties: dict[str, Value]
    properties_blob: bytes


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as read back."""

    sequence: int
    app_id: str
    event_id: str
    user_id: str
    name: str
    occurred_at: datetime
    received_at: datetime
    properties_blob: bytes


def _event(row: EventRow) -> StoredEvent:
    return StoredEvent(
        row.sequence,
        row.app_id,
        row.event_id,
        row.user_id,
        row.name,
        row.occurred_at,
        row.received_at,
        row.properties,
    )


class EventRepository:
    """Events of every app."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def known_ids(self, app_id: str, event_ids: Sequence[str]) -> set[str]:
        """The ids among ``event_ids`` already recorded for the app."""
        found: set[str] = set()
        for chunk in chunks(list(event_ids)):
            found.update(
                await self._session.scalars(
                    select(EventRow.event_id).where(
                        EventRow.app_id == app_id, EventRow.event_id.in_(chunk)
                    )
                )
            )
        return found

    async def append(self, app_id: str, events: Sequence[NewEvent], now: datetime) -> list[int]:
        """Store new events with the next sequences; the caller holds the append lock and
        knows the ids are new. Sequences come from a counter, never from
        ``max(sequence)``: retention and erasure delete rows, and a sequence a follower
        has seen must never be reused."""
        if not events:
            return []
        counter = await self._session.get(ServiceStateRow, SEQUENCE_COUNTER)
        if counter is None:
            last = await self._session.scalar(select(func.max(EventRow.sequence)))
            counter = ServiceStateRow(name=SEQUENCE_COUNTER, value=str(last or 0))
            self._session.add(counter)
        first = int(counter.value) + 1
        counter.value = str(first + len(events) - 1)
        await self._session.flush()
        sequences = list(range(first, first + len(events)))
        await insert_rows(
            self._session,
            EventRow,
            [
                {
                    "sequence": sequence,
                    "app_id": app_id,
                    "event_id": event.event_id,
                    "user_id": event.user_id,
                    "name": event.name,
                    "occurred_at": event.occurred_at,
                    "received_at": now,
                    "properties": event.properties_blob,
                }
                for sequence, event in zip(sequences, events, strict=True)
            ],
        )
        await insert_rows(
            self._session,
            EventPropertyRow,
            [
                {"sequence": sequence, "name": name, **value.columns()}
                for sequence, event in zip(sequences, events, strict=True)
                for name, value in event.properties.items()
            ],
        )
        await insert_rows(
            self._session,
            EventPropertyItemRow,
            [
                {"sequence": sequence, "name": name, "position": position, "value": item}
                for sequence, event in zip(sequences, events, strict=True)
                for name, value in event.properties.items()
                for position, item in enumerate(value.items())
            ],
        )
        return sequences

    async def read_after(
        self, app_id: str | None, after: int, limit: int, names: Collection[str] = ()
    ) -> tuple[list[StoredEvent], int]:
        """Up to ``limit`` events after ``after`` (of one app, or all), and the sequence
        the reader may resume after: past filtered-out events too, so a filtered
        follower never reads them again."""
        query = select(EventRow).where(EventRow.sequence > after)
        if app_id:
            query = query.where(EventRow.app_id == app_id)
        rows = list(await self._session.scalars(query.order_by(EventRow.sequence).limit(limit)))
        resume = rows[-1].sequence if rows else after
        wanted = [_event(row) for row in rows if not names or row.name in names]
        return wanted, resume

    async def head(self) -> int:
        """The latest sequence handed out (0 before the first event)."""
        counter = await self._session.get(ServiceStateRow, SEQUENCE_COUNTER)
        if counter is not None:
            return int(counter.value)
        return int(await self._session.scalar(select(func.max(EventRow.sequence))) or 0)

    async def oldest(self) -> int | None:
        """The oldest retained sequence (None when empty)."""
        value = await self._session.scalar(select(func.min(EventRow.sequence)))
        return None if value is None else int(value)

    async def _delete_where(self, *conditions: object) -> int:
        doomed = select(EventRow.sequence).where(*conditions)  # type: ignore[arg-type]
        for table in (EventPropertyItemRow, EventPropertyRow):
            await self._session.execute(delete(table).where(table.sequence.in_(doomed)))
        result = await self._session.execute(delete(EventRow).where(*conditions))  # type: ignore[arg-type]
        return int(getattr(result, "rowcount", 0) or 0)

    async def purge_received_before(self, instant: datetime) -> int:
        """Retention: delete events received before ``instant``."""
        return await self._delete_where(EventRow.received_at < instant)

    async def delete_user(self, app_id: str, user_id: str) -> int:
        """Erasure: delete every event of the user."""
        return await self._delete_where(EventRow.app_id == app_id, EventRow.user_id == user_id)

    async def latest_of(
        self, app_id: str, user_ids: Sequence[str], names: Sequence[str]
    ) -> dict[str, list[StoredEvent]]:
        """Each user's latest event (by ``occurred_at``, then sequence) of each name."""
        if not user_ids or not names:
            return {}
        ranked = (
            select(
                EventRow.sequence,
                func.row_number()
                .over(
                    partition_by=(EventRow.user_id, EventRow.name),
                    order_by=(EventRow.occurred_at.desc(), EventRow.sequence.desc()),
                )
                .label("rank"),
            )
            .where(
                EventRow.app_id == app_id,
                EventRow.user_id.in_(list(user_ids)),
                EventRow.name.in_(list(names)),
            )
            .subquery()
        )
        rows = await self._session.scalars(
            select(EventRow)
            .join(ranked, ranked.c.sequence == EventRow.sequence)
            .where(ranked.c.rank == 1)
            .order_by(EventRow.name)
        )
        found: dict[str, list[StoredEvent]] = {}
        for row in rows:
            found.setdefault(row.user_id, []).append(_event(row))
        return found

    async def page_of_user(
        self, app_id: str, user_id: str, after: tuple[datetime, int] | None, limit: int
    ) -> list[StoredEvent]:
        """A user's events oldest first (by ``occurred_at``, then sequence), after
        ``after``."""
        query = select(EventRow).where(EventRow.app_id == app_id, EventRow.user_id == user_id)
        if after is not None:
            at, sequence = after
            query = query.where(
                (EventRow.occurred_at > at)
                | ((EventRow.occurred_at == at) & (EventRow.sequence > sequence))
            )
        rows = await self._session.scalars(
            query.order_by(EventRow.occurred_at, EventRow.sequence).limit(limit)
        )
        return [_event(row) for row in rows]
