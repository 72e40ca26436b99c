"""The prompt events repository: funnel events in, funnel counts out.

Counting happens in the database, one grouped query per funnel, so a funnel over
millions of events moves one row per context to the service, never the events.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.runtime.db import insert_ignoring_duplicates
from pushwarden.services.consent.domain.prompts import (
    FunnelQuery,
    FunnelStats,
    PromptEventSpec,
    PromptStep,
)
from pushwarden.services.consent.models import PromptEventRow


def _count(step: PromptStep) -> Any:
    return func.coalesce(func.sum(case((PromptEventRow.event == step.value, 1), else_=0)), 0)


class PromptEventRepository:
    """Permission-prompt funnel events of every app; an idempotency key is unique per app."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def request_digest(self, app_id: str, idempotency_key: str) -> str | None:
        """The request digest the event recorded under this key came with, if any."""
        digest = await self._session.scalar(
            select(PromptEventRow.request_digest).where(
                PromptEventRow.app_id == app_id,
                PromptEventRow.idempotency_key == idempotency_key,
            )
        )
        return None if digest is None else str(digest)

    async def insert(self, event: PromptEventSpec, request_digest: str) -> bool:
        """Store the event; False when its key is taken (by a concurrent call)."""
        values = {
            "app_id": event.app_id,
            "user_id": event.user_id,
            "device_id": event.device_id,
            "event": event.step.value,
            "context": event.context,
            "platform": "" if event.platform is None else event.platform.value,
            "occurred_at": event.occurred_at,
            "idempotency_key": event.idempotency_key,
            "request_digest": request_digest,
        }
        inserted = await insert_ignoring_duplicates(self._session, PromptEventRow, [values])
        return inserted == 1

    async def funnel(self, query: FunnelQuery) -> list[FunnelStats]:
        """Each context's counts over the query's period and filters (one grouped
        query), ordered by context."""
        row = PromptEventRow
        statement = select(
            row.context,
            _count(PromptStep.PRE_PROMPT_SHOWN),
            _count(PromptStep.PRE_PROMPT_ACCEPTED),
            _count(PromptStep.PRE_PROMPT_DECLINED),
            _count(PromptStep.OS_PROMPT_SHOWN),
            _count(PromptStep.OS_GRANTED),
            _count(PromptStep.OS_DENIED),
        ).where(
            row.app_id == query.app_id,
            row.occurred_at < query.end,
            # Steps a newer server may add would only give empty rows here.
            row.event.in_([step.value for step in PromptStep]),
        )
        if query.start is not None:
            statement = statement.where(row.occurred_at >= query.start)
        if query.context is not None:
            statement = statement.where(row.context == query.context)
        if query.platform is not None:
            statement = statement.where(row.platform == query.platform.value)
        result = await self._session.execute(statement.group_by(row.context))
        stats = [
            FunnelStats.of_context(
                str(context),
                pre_prompt_shown=int(shown),
                pre_prompt_accepted=int(accepted),
                pre_prompt_declined=int(declined),
                os_prompt_shown=int(os_shown),
                os_granted=int(granted),
                os_denied=int(denied),
            )
            for context, shown, accepted, declined, os_shown, granted, denied in result.all()
        ]
        # Code point order, the same on both databases (PostgreSQL's ORDER BY follows
        # the database's collation, SQLite's compares bytes).
        return sorted(stats, key=lambda s: s.context)
