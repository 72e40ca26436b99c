"""The change feed repository: appends changes in commit order and reads them back.

Appends run under the unit of work's append lock, which is held until the transaction
commits; a sequence number is therefore only ever handed out after every smaller one has
committed (or rolled back, leaving no row), so a follower that reads ``sequence >
cursor`` sees every change exactly once and in commit order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.consent.models import ChangeRow, ServiceStateRow

SEQUENCE_COUNTER = "feed_sequence"


@dataclass(frozen=True, slots=True)
class StoredChange:
    """One change as read back."""

    sequence: int
    app_id: str
    user_id: str
    kind: str
    committed_at: datetime
    detail: bytes


def _change(row: ChangeRow) -> StoredChange:
    return StoredChange(
        row.sequence, row.app_id, row.user_id, row.kind, row.committed_at, row.detail
    )


class ChangeFeedRepository:
    """The ``changes`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(
        self,
        *,
        app_id: str,
        user_id: str,
        kind: str,
        committed_at: datetime,
        detail: bytes,
        related_user_id: str = "",
    ) -> int:
        """Append one change; returns its sequence. The caller holds the append lock.

        Sequences come from a counter, never from ``max(sequence)``: retention and
        erasure delete rows, and a sequence a follower has seen must never be reused."""
        counter = await self._session.get(ServiceStateRow, SEQUENCE_COUNTER)
        if counter is None:
            last = await self._session.scalar(select(func.max(ChangeRow.sequence)))
            counter = ServiceStateRow(name=SEQUENCE_COUNTER, value=str(last or 0))
            self._session.add(counter)
        sequence = int(counter.value) + 1
        counter.value = str(sequence)
        # The counter row is flushed with the transaction; the change goes in at once.
        await self._session.execute(
            insert(ChangeRow).values(
                sequence=sequence,
                app_id=app_id,
                user_id=user_id,
                kind=kind,
                committed_at=committed_at,
                detail=detail,
                related_user_id=related_user_id,
            )
        )
        return sequence

    async def read_after(
        self, app_id: str | None, after: int, limit: int, kinds: Collection[str] = ()
    ) -> tuple[list[StoredChange], int]:
        """Up to ``limit`` changes after ``after`` (of one app, or all), and the sequence
        the reader may resume after: past filtered-out changes too, so a filtered
        follower never reads them again."""
        query = select(ChangeRow).where(ChangeRow.sequence > after)
        if app_id:
            query = query.where(ChangeRow.app_id == app_id)
        rows = list(await self._session.scalars(query.order_by(ChangeRow.sequence).limit(limit)))
        resume = rows[-1].sequence if rows else after
        wanted = [_change(row) for row in rows if not kinds or row.kind in kinds]
        return wanted, resume

    async def head(self) -> int:
        """The latest sequence handed out (0 before the first change)."""
        counter = await self._session.get(ServiceStateRow, SEQUENCE_COUNTER)
        if counter is not None:
            return int(counter.value)
        return int(await self._session.scalar(select(func.max(ChangeRow.sequence))) or 0)

    async def head_and_watermark(self, watermark: str) -> tuple[int, int]:
        """:meth:`head` and the integer stored under ``watermark`` (0 when unset), in one
        statement (a feed stream asks after every read, for each follower)."""
        result = await self._session.execute(
            select(ServiceStateRow.name, ServiceStateRow.value).where(
                ServiceStateRow.name.in_([SEQUENCE_COUNTER, watermark])
            )
        )
        rows = {str(name): str(value) for name, value in result}
        purged = int(rows.get(watermark) or 0)
        if SEQUENCE_COUNTER in rows:
            return int(rows[SEQUENCE_COUNTER]), purged
        return await self.head(), purged

    async def oldest(self) -> int | None:
        """The oldest retained sequence (None when empty)."""
        value = await self._session.scalar(select(func.min(ChangeRow.sequence)))
        return None if value is None else int(value)

    async def purge_before(self, instant: datetime) -> int:
        """Retention: delete changes committed before ``instant``."""
        result = await self._session.execute(
            delete(ChangeRow).where(ChangeRow.committed_at < instant)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def mentioning(self, app_id: str, user_id: str) -> list[tuple[int, bytes]]:
        """The changes of other users whose detail names ``user_id`` (sequence, detail)."""
        rows = await self._session.execute(
            select(ChangeRow.sequence, ChangeRow.detail).where(
                ChangeRow.app_id == app_id, ChangeRow.related_user_id == user_id
            )
        )
        return [(int(sequence), bytes(detail)) for sequence, detail in rows]

    async def rewrite(self, sequence: int, detail: bytes) -> None:
        """Replace a change's detail (erasure scrubbing another user's id from it)."""
        row = await self._session.get(ChangeRow, sequence)
        if row is not None:
            row.detail = detail
            row.related_user_id = ""
            await self._session.flush()

    async def delete_user(self, app_id: str, user_id: str) -> int:
        """Erasure: delete a user's earlier changes (they carry personal data)."""
        result = await self._session.execute(
            delete(ChangeRow).where(ChangeRow.app_id == app_id, ChangeRow.user_id == user_id)
        )
        return int(getattr(result, "rowcount", 0) or 0)
