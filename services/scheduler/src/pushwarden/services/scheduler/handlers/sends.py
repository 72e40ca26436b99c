"""Transactional sends (SendTransactional) and the per-send record (GetSend).

A transactional request is stored as a PENDING intent of the transactional lane before
the call returns, keyed by its idempotency key: the same key returns the first
acceptance, the same key with another body is refused. The transactional dispatch loop
decides it at once (woken in this process; other replicas find it on their next poll).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pushwarden.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from pushwarden.services.scheduler.domain.intents import (
    IntentRecord,
    Lane,
    NewIntent,
    transactional_send_id,
)
from pushwarden.services.scheduler.handlers.common import SchedulerDeps
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.storage.intents import IntentRepository


@dataclass(frozen=True, slots=True)
class TransactionalRequest:
    """A validated SendTransactional call. ``body`` is the request's deterministic
    bytes: what the idempotency key is compared against, and what dispatch renders."""

    app_id: str
    user_id: str
    category_id: str
    idempotency_key: str
    body: bytes
    topic_id: str
    priority: int
    respect_quiet_hours: bool
    expires_at: datetime | None
    traceparent: str = ""
    tracestate: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What SendTransactional answers."""

    send_id: str
    accepted_at: datetime
    replayed: bool


class SendHandlers:
    """SendTransactional and GetSend."""

    def __init__(self, deps: SchedulerDeps) -> None:
        self._deps = deps

    async def send_transactional(self, request: TransactionalRequest) -> Accepted:
        """Store the send (before answering) or return the first acceptance of its key."""
        deps = self._deps
        async with deps.uow(read_only=True) as work:
            first = await _replay(work.intents, request)
        if first is not None:
            return first
        now = deps.clock.now()
        if request.expires_at is not None and request.expires_at <= now:
            raise InvalidArgument(
                "expires_at is in the past: the send could never go",
                [("expires_at", "must be in the future")],
            )
        await self._check_category(request.app_id, request.category_id)
        async with deps.uow() as work:
            added = await work.intents.add(
                [
                    NewIntent(
                        app_id=request.app_id,
                        send_id=transactional_send_id(request.app_id, request.idempotency_key),
                        user_id=request.user_id,
                        lane=Lane.TRANSACTIONAL,
                        category_id=request.category_id,
                        topic_id=request.topic_id,
                        idempotency_key=request.idempotency_key,
                        body=request.body,
                        priority=request.priority,
                        respect_quiet_hours=request.respect_quiet_hours,
                        expires_at=request.expires_at,
                        due_at=now,
                        created_at=now,
                        traceparent=request.traceparent,
                        tracestate=request.tracestate,
                    )
                ]
            )
            first = None if added else await _replay(work.intents, request)
            await work.commit()
        if first is not None:  # a concurrent call with the same key stored it first
            return first
        deps.intents_arrived(Lane.TRANSACTIONAL)
        return Accepted(
            send_id=transactional_send_id(request.app_id, request.idempotency_key),
            accepted_at=now,
            replayed=False,
        )

    async def _check_category(self, app_id: str, category_id: str) -> None:
        try:
            kinds = await self._deps.consent.kinds(app_id, [category_id])
        except PeerUnavailable as error:
            raise Unavailable(f"cannot check the category: {error}") from error
        kind = kinds.get(category_id)
        if kind is None:
            raise InvalidArgument(
                f"unknown category {category_id!r}",
                [("category_id", "no such category at consent")],
                reason="UNKNOWN_REFERENCE",
            )
        if kind != "TRANSACTIONAL":
            raise FailedPrecondition(
                f"category {category_id!r} is {kind}: a transactional send needs a "
                "TRANSACTIONAL category (the exemption follows the registered kind only)",
                [("CATEGORY_KIND", f"category_id {category_id}", "must be TRANSACTIONAL")],
                reason="CATEGORY_KIND_MISMATCH",
            )

    async def get(
        self, app_id: str, *, send_id: str = "", idempotency_key: str = ""
    ) -> IntentRecord:
        """One send's record by send id or transactional idempotency key."""
        async with self._deps.uow(read_only=True) as work:
            record = (
                await work.intents.record(app_id, send_id)
                if send_id
                else await work.intents.record_by_key(app_id, idempotency_key)
            )
        if record is None:
            name = send_id or idempotency_key
            raise NotFound(f"no send {name!r}", resource_type="send", resource_name=name)
        return record

    async def export(
        self, app_id: str, user_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[datetime, list[tuple[datetime, IntentRecord]]]:
        """When the export was made, and a page of a user's intents and contacts (each
        with its creation instant), oldest first."""
        async with self._deps.uow(read_only=True) as work:
            rows = await work.intents.of_user(app_id, user_id, after, limit)
        return self._deps.clock.now(), rows


async def _replay(intents: IntentRepository, request: TransactionalRequest) -> Accepted | None:
    """The first acceptance of the request's key, or None; another body is refused."""
    row = await intents.by_key(request.app_id, request.idempotency_key)
    if row is None:
        return None
    if row.body != request.body or row.user_id != request.user_id:
        raise AlreadyExists(
            "this idempotency key was used for another request",
            resource_type="idempotency_key",
            resource_name=request.idempotency_key,
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    return Accepted(send_id=row.send_id, accepted_at=row.created_at, replayed=True)
