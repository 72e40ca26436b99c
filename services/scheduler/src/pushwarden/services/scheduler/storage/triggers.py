"""Triggers, and what the event follower reads and writes about their firings.

A firing is an intent (``intents.trigger_id`` set); the per-batch reads and writes here
are one statement each: the batch's stored firings, the cancellations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates, pairs_in
from pushwarden.segmentation.v1 import resources_pb2 as segmentation_pb2
from pushwarden.services.scheduler.domain.triggers import StoredFiring
from pushwarden.services.scheduler.models import IntentRow, ServiceStateRow, TriggerRow

_PENDING = "PENDING"
_DROPPED = "DROPPED"


class TriggerRepository:
    """Triggers on one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: Mapping[str, Any]) -> bool:
        """Store a new trigger; False when its id (or key) exists already."""
        return await insert_ignoring_duplicates(self._session, TriggerRow, [row]) == 1

    async def get(self, app_id: str, trigger_id: str, *, lock: bool = False) -> TriggerRow | None:
        """One trigger (locked for update when ``lock``)."""
        query = select(TriggerRow).where(
            TriggerRow.app_id == app_id, TriggerRow.trigger_id == trigger_id
        )
        if lock:
            query = query.with_for_update()
        return (await self._session.scalars(query)).one_or_none()

    async def many(self, app_id: str, trigger_ids: Iterable[str]) -> list[TriggerRow]:
        """The named triggers of one app that exist."""
        ids = sorted(set(trigger_ids))
        if not ids:
            return []
        return list(
            (
                await self._session.scalars(
                    select(TriggerRow).where(
                        TriggerRow.app_id == app_id, TriggerRow.trigger_id.in_(ids)
                    )
                )
            ).all()
        )

    async def by_key(self, app_id: str, idempotency_key: str) -> TriggerRow | None:
        """The trigger a CreateTrigger key made, or None."""
        return (
            await self._session.scalars(
                select(TriggerRow).where(
                    TriggerRow.app_id == app_id, TriggerRow.idempotency_key == idempotency_key
                )
            )
        ).one_or_none()

    async def page(
        self, app_id: str, enabled: bool | None, after: str | None, limit: int
    ) -> list[TriggerRow]:
        """A page of an app's triggers by id."""
        query = select(TriggerRow).where(TriggerRow.app_id == app_id)
        if enabled is not None:
            query = query.where(TriggerRow.enabled == enabled)
        if after is not None:
            query = query.where(TriggerRow.trigger_id > after)
        return list(
            (await self._session.scalars(query.order_by(TriggerRow.trigger_id).limit(limit))).all()
        )

    async def enabled_of(self, app_ids: Iterable[str]) -> list[TriggerRow]:
        """The enabled triggers of ``app_ids`` (whatever their event: a cancel matcher
        names another one), share-locked until the transaction ends: a concurrent
        SetTriggerEnabled waits, then drops the firings this transaction stored."""
        apps = sorted(set(app_ids))
        if not apps:
            return []
        return list(
            (
                await self._session.scalars(
                    select(TriggerRow)
                    .where(TriggerRow.app_id.in_(apps), TriggerRow.enabled.is_(True))
                    .with_for_update(read=True)
                )
            ).all()
        )

    async def locked_cursor(self, name: str) -> str | None:
        """The stored cursor ``name``, its row locked until the transaction ends (two
        followers never apply the same stretch of the stream)."""
        row = await self._session.get(ServiceStateRow, name, with_for_update=True)
        return None if row is None else row.value

    async def drop_pending(self, app_id: str, trigger_id: str, reason: int, now: datetime) -> int:
        """Drop every pending firing of a trigger with ``reason``; returns how many."""
        result = await self._session.execute(
            update(IntentRow)
            .where(
                IntentRow.app_id == app_id,
                IntentRow.trigger_id == trigger_id,
                IntentRow.state == _PENDING,
            )
            .values(
                state=_DROPPED, outcome="DROP", reason=reason, decided_at=now, claimed_until=None
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def firings(
        self, pairs: Iterable[tuple[str, str]], trigger_ids: Iterable[str]
    ) -> dict[tuple[str, str, str], list[StoredFiring]]:
        """The stored firings of ``trigger_ids`` for the (app, user) ``pairs``, by
        (app, trigger, user): pending ones, and those handed to delivery."""
        users = sorted(set(pairs))
        triggers = sorted(set(trigger_ids))
        found: dict[tuple[str, str, str], list[StoredFiring]] = defaultdict(list)
        if not users or not triggers:
            return found
        for start in range(0, len(users), 1000):
            rows = await self._session.execute(
                select(
                    IntentRow.app_id,
                    IntentRow.trigger_id,
                    IntentRow.user_id,
                    IntentRow.send_id,
                    IntentRow.state,
                    IntentRow.due_at,
                    IntentRow.sent_at,
                    IntentRow.body,
                ).where(
                    pairs_in(IntentRow.app_id, IntentRow.user_id, users[start : start + 1000]),
                    IntentRow.trigger_id.in_(triggers),
                    (IntentRow.state == _PENDING) | IntentRow.sent_at.is_not(None),
                )
            )
            for app_id, trigger_id, user_id, send_id, state, due_at, sent_at, body in rows:
                pending = state == _PENDING
                found[(app_id, trigger_id or "", user_id)].append(
                    StoredFiring(
                        send_id=send_id,
                        state=state,
                        due_at=due_at,
                        sent_at=sent_at,
                        event=segmentation_pb2.Event.FromString(body) if pending and body else None,
                    )
                )
        return found

    async def cancel(self, cancelled: Sequence[tuple[str, str]], reason: int, now: datetime) -> int:
        """Drop the pending firings ``cancelled`` (app, send id) with ``reason``."""
        if not cancelled:
            return 0
        result = await self._session.execute(
            update(IntentRow)
            .where(
                pairs_in(IntentRow.app_id, IntentRow.send_id, cancelled),
                IntentRow.state == _PENDING,
            )
            .values(
                state=_DROPPED, outcome="DROP", reason=reason, decided_at=now, claimed_until=None
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)
