"""The segments repository: saved segments (rules kept as the serialized contract
message, immutable), their direct references, and evaluation of rule trees in the
database (see :mod:`.rules_sql`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.segmentation.domain.rules import Node
from pushwarden.services.segmentation.models import SegmentReferenceRow, SegmentRow
from pushwarden.services.segmentation.storage.common import chunks, insert_rows
from pushwarden.services.segmentation.storage.rules_sql import (
    Scope,
    known_among,
    members_among,
    members_count,
    members_page,
    window_ends,
)

# Known users per window of a members page: a page's statements each read at most
# about this many users of each source, whatever the population after the cursor.
MEMBER_WINDOW: Final = 10_000


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """A segment as stored."""

    app_id: str
    segment_id: str
    name: str
    description: str
    rule: bytes
    created_at: datetime
    deleted_at: datetime | None
    request_digest: str
    referenced_segment_ids: tuple[str, ...]
    referenced_list_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewSegment:
    """A segment to store."""

    app_id: str
    segment_id: str
    name: str
    description: str
    rule: bytes
    idempotency_key: str | None
    request_digest: str
    referenced_segment_ids: tuple[str, ...]
    referenced_list_ids: tuple[str, ...]


class SegmentRepository:
    """Segments of every app, keyed by (app, segment id)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _segments(self, rows: Sequence[SegmentRow]) -> list[StoredSegment]:
        if not rows:
            return []
        references: dict[str, tuple[list[str], list[str]]] = {
            row.segment_id: ([], []) for row in rows
        }
        for chunk in chunks(list(references)):
            found = await self._session.execute(
                select(
                    SegmentReferenceRow.segment_id,
                    SegmentReferenceRow.target_kind,
                    SegmentReferenceRow.target_id,
                )
                .where(
                    SegmentReferenceRow.app_id == rows[0].app_id,
                    SegmentReferenceRow.segment_id.in_(chunk),
                )
                .order_by(SegmentReferenceRow.target_id)
            )
            for segment_id, kind, target in found:
                references[segment_id][0 if kind == "SEGMENT" else 1].append(target)
        return [
            StoredSegment(
                row.app_id,
                row.segment_id,
                row.name,
                row.description,
                row.rule,
                row.created_at,
                row.deleted_at,
                row.request_digest,
                tuple(references[row.segment_id][0]),
                tuple(references[row.segment_id][1]),
            )
            for row in rows
        ]

    async def get(self, app_id: str, segment_id: str) -> StoredSegment | None:
        """One segment (deleted ones too), or None."""
        row = await self._session.get(SegmentRow, (app_id, segment_id))
        return None if row is None else (await self._segments([row]))[0]

    async def get_many(self, app_id: str, segment_ids: Sequence[str]) -> dict[str, StoredSegment]:
        """The segments among ``segment_ids`` that exist (deleted ones too)."""
        rows: list[SegmentRow] = []
        for chunk in chunks(list(segment_ids)):
            rows += await self._session.scalars(
                select(SegmentRow).where(
                    SegmentRow.app_id == app_id, SegmentRow.segment_id.in_(chunk)
                )
            )
        return {segment.segment_id: segment for segment in await self._segments(rows)}

    async def by_key(self, app_id: str, key: str) -> StoredSegment | None:
        """The segment created with this idempotency key, or None."""
        row = await self._session.scalar(
            select(SegmentRow).where(SegmentRow.app_id == app_id, SegmentRow.idempotency_key == key)
        )
        return None if row is None else (await self._segments([row]))[0]

    async def insert(self, segment: NewSegment, now: datetime) -> bool:
        """Insert a segment and its references; False when its id or key was taken
        concurrently (nothing written)."""
        inserted = await insert_ignoring_duplicates(
            self._session,
            SegmentRow,
            [
                {
                    "app_id": segment.app_id,
                    "segment_id": segment.segment_id,
                    "name": segment.name,
                    "description": segment.description,
                    "rule": segment.rule,
                    "created_at": now,
                    "deleted_at": None,
                    "idempotency_key": segment.idempotency_key,
                    "request_digest": segment.request_digest,
                }
            ],
        )
        if inserted != 1:
            return False
        await insert_rows(
            self._session,
            SegmentReferenceRow,
            [
                {
                    "app_id": segment.app_id,
                    "segment_id": segment.segment_id,
                    "target_kind": kind,
                    "target_id": target,
                }
                for kind, targets in (
                    ("SEGMENT", segment.referenced_segment_ids),
                    ("LIST", segment.referenced_list_ids),
                )
                for target in targets
            ],
        )
        return True

    async def page(self, app_id: str, after: str | None, limit: int) -> list[StoredSegment]:
        """Up to ``limit`` live segments ordered by id, after ``after``."""
        query = select(SegmentRow).where(
            SegmentRow.app_id == app_id, SegmentRow.deleted_at.is_(None)
        )
        if after is not None:
            query = query.where(SegmentRow.segment_id > after)
        rows = list(await self._session.scalars(query.order_by(SegmentRow.segment_id).limit(limit)))
        return await self._segments(rows)

    async def live_referrers(self, app_id: str, segment_id: str) -> list[str]:
        """Live segments that reference ``segment_id`` directly."""
        return list(
            await self._session.scalars(
                select(SegmentRow.segment_id)
                .join(
                    SegmentReferenceRow,
                    (SegmentReferenceRow.app_id == SegmentRow.app_id)
                    & (SegmentReferenceRow.segment_id == SegmentRow.segment_id),
                )
                .where(
                    SegmentRow.app_id == app_id,
                    SegmentRow.deleted_at.is_(None),
                    SegmentReferenceRow.target_kind == "SEGMENT",
                    SegmentReferenceRow.target_id == segment_id,
                )
                .order_by(SegmentRow.segment_id)
            )
        )

    async def mark_deleted(self, app_id: str, segment_id: str, now: datetime) -> None:
        """Hide a segment from new references (its rules stay)."""
        await self._session.execute(
            update(SegmentRow)
            .where(
                SegmentRow.app_id == app_id,
                SegmentRow.segment_id == segment_id,
                SegmentRow.deleted_at.is_(None),
            )
            .values(deleted_at=now)
        )

    async def members_page(
        self,
        root: Node,
        scope: Scope,
        after: str | None,
        limit: int,
        *,
        window: int = MEMBER_WINDOW,
    ) -> list[str]:
        """Up to ``limit`` members after ``after`` in code-point order.

        The known users after ``after`` are taken a window at a time, so that the work
        is proportional to the users walked, not to all those after the cursor: each
        source (profiles, events, list memberships) gives its ``window``-th user id
        after the window's start, and the window (start, end] ends at the smallest of
        them, so it holds at most ``window`` users of each source; it is open when no
        source has that many left (then none has more than ``window`` - 1). The rule
        is evaluated for the window's users only, then the next window starts right
        after this one's end, until the page is full or the users run out.
        """
        if window < 1:
            raise ValueError("window must be at least 1")
        found: list[str] = []
        start = after
        while len(found) < limit:
            ends = [
                end
                for query in window_ends(scope.app_id, scope.dialect, start, window)
                if (end := await self._session.scalar(query)) is not None
            ]
            upto = min(ends) if ends else None  # str order is code-point order
            found += await self._session.scalars(
                members_page(root, scope, start, limit - len(found), upto)
            )
            if upto is None:
                break
            start = upto
        return found

    async def count(self, root: Node, scope: Scope) -> int:
        """How many users match."""
        return int(await self._session.scalar(members_count(root, scope)) or 0)

    async def members_among(self, root: Node, scope: Scope, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` match."""
        return set(await self._session.scalars(members_among(root, scope, user_ids)))

    async def known_among(self, app_id: str, dialect: str, user_ids: Sequence[str]) -> set[str]:
        """Which of ``user_ids`` segmentation knows."""
        return set(await self._session.scalars(known_among(app_id, dialect, user_ids)))
