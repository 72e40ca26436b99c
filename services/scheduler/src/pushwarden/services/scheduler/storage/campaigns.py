"""Campaign rows, their fan-out claims and progress, and the decision counters."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.scheduler.v1 import resources_pb2
from pushwarden.services.scheduler.domain.campaigns import CampaignState
from pushwarden.services.scheduler.domain.intents import IntentState
from pushwarden.services.scheduler.domain.throttle import MINUTE, ThrottleSlot, minute_of
from pushwarden.services.scheduler.models import (
    CampaignRow,
    DecisionCountRow,
    IntentRow,
    ThrottleSlotRow,
)

_PENDING = IntentState.PENDING.value
_OUTBOX = IntentState.OUTBOX.value
_SENT = IntentState.SENT.value
_DROPPED = IntentState.DROPPED.value
_FANNING = (CampaignState.SCHEDULED.value, CampaignState.RUNNING.value)


@dataclass(frozen=True, slots=True)
class Progress:
    """What GetCampaign counts from the intents and the decision counters."""

    pending: int
    deferred: int
    sent: int
    dropped: int
    by_outcome: dict[tuple[str, int], int]
    variants: dict[str, tuple[int, int]]  # variant id → (assigned, sent)


class CampaignRepository:
    """Campaigns on one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, row: Mapping[str, Any]) -> bool:
        """Store a new campaign; False when its id (or key) exists already."""
        return await insert_ignoring_duplicates(self._session, CampaignRow, [row]) == 1

    async def get(self, app_id: str, campaign_id: str, *, lock: bool = False) -> CampaignRow | None:
        """One campaign (locked for update when ``lock``)."""
        query = select(CampaignRow).where(
            CampaignRow.app_id == app_id, CampaignRow.campaign_id == campaign_id
        )
        if lock:
            query = query.with_for_update()
        return (await self._session.scalars(query)).one_or_none()

    async def by_key(self, app_id: str, idempotency_key: str) -> CampaignRow | None:
        """The campaign a CreateCampaign key made, or None."""
        return (
            await self._session.scalars(
                select(CampaignRow).where(
                    CampaignRow.app_id == app_id, CampaignRow.idempotency_key == idempotency_key
                )
            )
        ).one_or_none()

    async def page(
        self,
        app_id: str,
        states: Sequence[str],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[CampaignRow]:
        """Campaigns newest first (then by id), after the page token's position."""
        query = select(CampaignRow).where(CampaignRow.app_id == app_id)
        if states:
            query = query.where(CampaignRow.state.in_(list(states)))
        if after is not None:
            created, campaign_id = after
            query = query.where(
                or_(
                    CampaignRow.created_at < created,
                    and_(CampaignRow.created_at == created, CampaignRow.campaign_id > campaign_id),
                )
            )
        query = query.order_by(CampaignRow.created_at.desc(), CampaignRow.campaign_id).limit(limit)
        return list((await self._session.scalars(query)).all())

    async def claim_fanout(self, now: datetime, lease_until: datetime) -> CampaignRow | None:
        """Claim one campaign whose fan-out is due and unfinished (SKIP LOCKED)."""
        row = (
            await self._session.scalars(
                select(CampaignRow)
                .where(
                    CampaignRow.state.in_(_FANNING),
                    CampaignRow.fan_out_complete.is_(False),
                    CampaignRow.fanout_at <= now,
                    or_(CampaignRow.claimed_until.is_(None), CampaignRow.claimed_until <= now),
                )
                .order_by(CampaignRow.fanout_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
        ).one_or_none()
        if row is not None:
            row.claimed_until = lease_until
            if row.state == CampaignState.SCHEDULED.value:
                row.state = CampaignState.RUNNING.value
            await self._session.flush()
        return row

    async def release_fanout(self, app_id: str, campaign_id: str) -> None:
        """Give a campaign's fan-out claim back (the next claim resumes at its cursor)."""
        await self._session.execute(
            update(CampaignRow)
            .where(CampaignRow.app_id == app_id, CampaignRow.campaign_id == campaign_id)
            .values(claimed_until=None)
            .execution_options(synchronize_session=False)
        )

    async def cancel_pending(
        self, app_id: str, campaign_id: str, reason: int, now: datetime
    ) -> int:
        """Drop every pending intent of a campaign with ``reason``; returns how many."""
        result = await self._session.execute(
            update(IntentRow)
            .where(
                IntentRow.app_id == app_id,
                IntentRow.campaign_id == campaign_id,
                IntentRow.state == _PENDING,
            )
            .values(
                state=_DROPPED, outcome="DROP", reason=reason, decided_at=now, claimed_until=None
            )
            .execution_options(synchronize_session=False)
        )
        dropped = int(getattr(result, "rowcount", 0) or 0)
        if dropped:
            await self.count({(app_id, campaign_id, "DROP", reason): dropped})
        return dropped

    async def count(self, increments: Mapping[tuple[str, str, str, int], int]) -> None:
        """Add to the decision counters (app, campaign, outcome, reason) → count."""
        if not increments:
            return
        rows = [
            {"app_id": a, "campaign_id": c, "outcome": o, "reason": r, "count": n}
            for (a, c, o, r), n in sorted(increments.items())
            if n
        ]
        dialect = self._session.bind.dialect.name if self._session.bind is not None else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(DecisionCountRow).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["app_id", "campaign_id", "outcome", "reason"],
            set_={"count": DecisionCountRow.count + statement.excluded.count},
        )
        await self._session.execute(statement)

    async def throttle_limits(self, app_id: str, campaign_ids: Iterable[str]) -> dict[str, int]:
        """The sends-per-minute limit of each throttled campaign among ``campaign_ids``
        (unthrottled ones are left out)."""
        ids = sorted(set(campaign_ids))
        if not ids:
            return {}
        rows = await self._session.execute(
            select(CampaignRow.campaign_id, CampaignRow.definition).where(
                CampaignRow.app_id == app_id, CampaignRow.campaign_id.in_(ids)
            )
        )
        limits: dict[str, int] = {}
        for campaign_id, definition in rows:
            limit = resources_pb2.Campaign.FromString(definition).throttle.sends_per_minute
            if limit:
                limits[campaign_id] = limit
        return limits

    async def lock_throttle_slots(
        self, app_id: str, limits: Mapping[str, int], now: datetime
    ) -> dict[str, ThrottleSlot]:
        """The slots of throttled campaigns, locked until this transaction ends (row
        locks in campaign order on PostgreSQL; SQLite's write lock serialises anyway)."""
        if not limits:
            return {}
        ids = sorted(limits)
        fresh = minute_of(now) - MINUTE
        await insert_ignoring_duplicates(
            self._session,
            ThrottleSlotRow,
            [{"app_id": app_id, "campaign_id": c, "slot_at": fresh, "used": 0} for c in ids],
        )
        rows = await self._session.execute(
            select(ThrottleSlotRow.campaign_id, ThrottleSlotRow.slot_at, ThrottleSlotRow.used)
            .where(ThrottleSlotRow.app_id == app_id, ThrottleSlotRow.campaign_id.in_(ids))
            .order_by(ThrottleSlotRow.campaign_id)
            .with_for_update()
        )
        return {
            campaign_id: ThrottleSlot(limits[campaign_id], slot_at, int(used))
            for campaign_id, slot_at, used in rows
        }

    async def throttle_slot(self, app_id: str, campaign_id: str, limit: int) -> ThrottleSlot:
        """A campaign's throttle slot as it stands, unlocked (for explanations)."""
        row = (
            await self._session.execute(
                select(ThrottleSlotRow.slot_at, ThrottleSlotRow.used).where(
                    ThrottleSlotRow.app_id == app_id, ThrottleSlotRow.campaign_id == campaign_id
                )
            )
        ).one_or_none()
        if row is None:
            return ThrottleSlot(limit)
        return ThrottleSlot(limit, row.slot_at, int(row.used))

    async def save_throttle_slots(self, app_id: str, slots: Mapping[str, ThrottleSlot]) -> None:
        """Write back slots taken with :meth:`lock_throttle_slots`."""
        for campaign_id, slot in sorted(slots.items()):
            await self._session.execute(
                update(ThrottleSlotRow)
                .where(ThrottleSlotRow.app_id == app_id, ThrottleSlotRow.campaign_id == campaign_id)
                .values(slot_at=slot.slot_at, used=slot.used)
                .execution_options(synchronize_session=False)
            )

    async def progress(self, app_id: str, campaign_id: str) -> Progress:
        """The campaign's intents counted by state and variant, and its counters."""
        of_campaign = and_(IntentRow.app_id == app_id, IntentRow.campaign_id == campaign_id)
        sent = IntentRow.state.in_((_OUTBOX, _SENT))
        rows = await self._session.execute(
            select(
                IntentRow.variant_id,
                IntentRow.holdout,
                func.count(),
                func.sum(case((IntentRow.state == _PENDING, 1), else_=0)),
                func.sum(
                    case((and_(IntentRow.state == _PENDING, IntentRow.deferrals > 0), 1), else_=0)
                ),
                func.sum(case((sent, 1), else_=0)),
                func.sum(case((IntentRow.state == _DROPPED, 1), else_=0)),
            )
            .where(of_campaign)
            .group_by(IntentRow.variant_id, IntentRow.holdout)
        )
        pending = deferred = sent_total = dropped = 0
        variants: dict[str, tuple[int, int]] = {}
        for variant_id, holdout, total, waiting, waited, handed, ended in rows:
            if holdout:
                continue
            pending += int(waiting or 0)
            deferred += int(waited or 0)
            sent_total += int(handed or 0)
            dropped += int(ended or 0)
            assigned, so_far = variants.get(variant_id, (0, 0))
            variants[variant_id] = (assigned + int(total), so_far + int(handed or 0))
        counters: Counter[tuple[str, int]] = Counter()
        for outcome, reason, count in await self._session.execute(
            select(DecisionCountRow.outcome, DecisionCountRow.reason, DecisionCountRow.count).where(
                DecisionCountRow.app_id == app_id, DecisionCountRow.campaign_id == campaign_id
            )
        ):
            counters[(outcome, reason)] += int(count)
        return Progress(pending, deferred, sent_total, dropped, dict(counters), variants)

    async def finished_fanouts(self, limit: int) -> list[tuple[str, str]]:
        """RUNNING campaigns whose fan-out is over and that have nothing pending or in
        the outbox: ready to be COMPLETED."""
        busy = (
            select(IntentRow.send_id)
            .where(
                IntentRow.app_id == CampaignRow.app_id,
                IntentRow.campaign_id == CampaignRow.campaign_id,
                IntentRow.state.in_((_PENDING, _OUTBOX)),
            )
            .exists()
        )
        rows = await self._session.execute(
            select(CampaignRow.app_id, CampaignRow.campaign_id)
            .where(
                CampaignRow.state == CampaignState.RUNNING.value,
                CampaignRow.fan_out_complete.is_(True),
                ~busy,
            )
            .limit(limit)
        )
        return [(app_id, campaign_id) for app_id, campaign_id in rows]
