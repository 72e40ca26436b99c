"""Remembered retry keys: the first call's request digest and response."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.services.consent.models import IdempotencyKeyRow


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the first call with a key sent and got."""

    request_digest: str
    response: bytes


class IdempotencyRepository:
    """The ``idempotency_keys`` table."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def find(self, app_id: str, rpc: str, owner: str, key: str) -> Remembered | None:
        """The remembered call for this key, if any."""
        row = await self._session.get(IdempotencyKeyRow, (app_id, rpc, owner, key))
        return None if row is None else Remembered(row.request_digest, row.response)

    async def remember(
        self,
        app_id: str,
        rpc: str,
        owner: str,
        key: str,
        request_digest: str,
        response: bytes,
        now: datetime,
    ) -> None:
        """Store the first call's digest and response."""
        self._session.add(
            IdempotencyKeyRow(
                app_id=app_id,
                rpc=rpc,
                owner=owner,
                key=key,
                request_digest=request_digest,
                response=response,
                created_at=now,
            )
        )
        await self._session.flush()

    async def forget_owner(self, app_id: str, owner: str, rpcs: tuple[str, ...]) -> int:
        """Erasure: drop one owner's (a user's pseudonym's) keys of ``rpcs``."""
        result = await self._session.execute(
            delete(IdempotencyKeyRow).where(
                IdempotencyKeyRow.app_id == app_id,
                IdempotencyKeyRow.owner == owner,
                IdempotencyKeyRow.rpc.in_(rpcs),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def forget_before(self, instant: datetime, rpcs: tuple[str, ...]) -> int:
        """Retention of app-wide keys of ``rpcs``: drop those older than ``instant``."""
        result = await self._session.execute(
            delete(IdempotencyKeyRow).where(
                IdempotencyKeyRow.rpc.in_(rpcs), IdempotencyKeyRow.created_at < instant
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)
