"""What GDPR export and erasure need beyond the other repositories: a user's
permission-prompt events."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.services.consent.models import PromptEventRow


class UserDataRepository:
    """A user's prompt events, read for export and deleted on erasure."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def prompt_events(
        self, app_id: str, user_id: str, after_id: int, limit: int
    ) -> list[tuple[int, messages_pb2.PromptRecord]]:
        """A page of the user's prompt events, oldest first, with their row ids."""
        rows = await self._session.scalars(
            select(PromptEventRow)
            .where(
                PromptEventRow.app_id == app_id,
                PromptEventRow.user_id == user_id,
                PromptEventRow.id > after_id,
            )
            .order_by(PromptEventRow.id)
            .limit(limit)
        )
        page: list[tuple[int, messages_pb2.PromptRecord]] = []
        for row in rows:
            record = messages_pb2.PromptRecord(
                event=resources_pb2.PromptEvent.Value(f"PROMPT_EVENT_{row.event}"),
                context=row.context,
                device_id=row.device_id,
            )
            record.occurred_at.FromDatetime(row.occurred_at)
            page.append((row.id, record))
        return page

    async def delete_prompt_events(self, app_id: str, user_id: str) -> int:
        """Erasure: the user's funnel events go (the funnel's counts with them)."""
        result = await self._session.execute(
            delete(PromptEventRow).where(
                PromptEventRow.app_id == app_id, PromptEventRow.user_id == user_id
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
