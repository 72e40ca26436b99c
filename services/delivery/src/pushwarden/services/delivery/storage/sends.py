"""The sends repository: the accepted sends (the dispatch queue), their devices and
attempts, in and out as domain values."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Select,
    Table,
    and_,
    bindparam,
    delete,
    false,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from pushwarden.delivery.v1 import resources_pb2
from pushwarden.runtime.db import insert_returning_new, pairs_in
from pushwarden.services.delivery.domain.sends import (
    ACTIVE_STATUSES,
    AttemptOutcome,
    AttemptRecord,
    DeliveryRecord,
    DeviceRecord,
    DeviceStatus,
    Kind,
    NewSend,
    SendStatus,
)
from pushwarden.services.delivery.models import AttemptRow, SendDeviceRow, SendRow

# The executemany statements of :meth:`SendRepository.record`, on the tables (Core):
# in the UPDATEs the ``key_*`` values of each parameter dict name its row, and its other
# keys (column names, the same in every dict) are the columns it sets.
_SENDS = cast(Table, SendRow.__table__)
_DEVICES = cast(Table, SendDeviceRow.__table__)
_INSERT_DEVICES = insert(_DEVICES)
_INSERT_ATTEMPTS = insert(cast(Table, AttemptRow.__table__))
_UPDATE_SENDS = update(_SENDS).where(
    _SENDS.c.app_id == bindparam("key_app_id"),
    _SENDS.c.send_id == bindparam("key_send_id"),
)
_UPDATE_DEVICES = update(_DEVICES).where(
    _DEVICES.c.app_id == bindparam("key_app_id"),
    _DEVICES.c.send_id == bindparam("key_send_id"),
    _DEVICES.c.device_id == bindparam("key_device_id"),
)


@dataclass(slots=True)
class DeviceState:
    """What dispatch knows of one device of a send between passes."""

    device_id: str
    provider: int
    platform: int
    status: DeviceStatus
    requests: int = 0
    tries: int = 0
    apns_id: str = ""
    reason: str = ""
    invalidated_at: datetime | None = None
    stored: bool = True


@dataclass(slots=True)
class ClaimedSend:
    """A send claimed for one dispatch pass, with its devices so far."""

    app_id: str
    send_id: str
    user_id: str
    category_id: str
    topic_id: str
    kind: Kind
    send: resources_pb2.Send
    expires_at: datetime | None
    latest_send_at: datetime | None
    passes: int
    requests: int
    devices: dict[str, DeviceState] = field(default_factory=dict)


@dataclass(slots=True)
class PassResult:
    """What one dispatch pass made of a claimed send, to be written in one transaction."""

    send: ClaimedSend
    status: SendStatus
    next_attempt_at: datetime
    failure_reason: str = ""
    suppressed_reason: int = 0
    completed_at: datetime | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    counted_pass: bool = True


@dataclass(frozen=True, slots=True)
class PendingInvalidation:
    """A dead token consent has not been told about yet."""

    app_id: str
    send_id: str
    device_id: str
    provider: int
    reason: str
    invalidated_at: datetime | None


class SendRepository:
    """Sends of every app keyed by (app, send id), with their devices and attempts."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def existing(self, app_id: str, send_ids: Sequence[str]) -> set[str]:
        """The send ids among ``send_ids`` already accepted for the app."""
        rows = await self._session.scalars(
            select(SendRow.send_id).where(
                SendRow.app_id == app_id, SendRow.send_id.in_(list(send_ids))
            )
        )
        return set(rows)

    async def insert_new(self, sends: Sequence[tuple[NewSend, Kind]], now: datetime) -> set[str]:
        """Store sends not accepted before (PENDING, due now); returns the ids this call
        inserted (a concurrent Deliver of the same id keeps its own)."""
        values = [_send_values(new, kind, now) for new, kind in sends]
        if not values:
            return set()
        return set(await insert_returning_new(self._session, SendRow, values, "send_id"))

    async def get(self, app_id: str, send_id: str) -> DeliveryRecord | None:
        """One send with its devices and their attempts, oldest first."""
        row = await self._session.get(SendRow, (app_id, send_id))
        if row is None:
            return None
        devices = await self._session.scalars(
            select(SendDeviceRow)
            .where(SendDeviceRow.app_id == app_id, SendDeviceRow.send_id == send_id)
            .order_by(SendDeviceRow.device_id)
        )
        attempts = await self._session.scalars(
            select(AttemptRow)
            .where(AttemptRow.app_id == app_id, AttemptRow.send_id == send_id)
            .order_by(AttemptRow.attempt_id)
        )
        by_device: dict[str, list[AttemptRecord]] = defaultdict(list)
        for attempt in attempts:
            by_device[attempt.device_id].append(_attempt(attempt))
        send = resources_pb2.Send()
        send.ParseFromString(row.send)
        return DeliveryRecord(
            send=send,
            kind=Kind(row.kind),
            status=SendStatus(row.status),
            failure_reason=row.failure_reason,
            suppressed_reason=row.suppressed_reason,
            devices=[
                DeviceRecord(
                    device_id=device.device_id,
                    provider=device.provider,
                    platform=device.platform,
                    status=DeviceStatus(device.status),
                    attempts=by_device.get(device.device_id, []),
                )
                for device in devices
            ],
            accepted_at=row.created_at,
            completed_at=row.completed_at,
        )

    async def claim_due(
        self,
        now: datetime,
        limit: int,
        lease_until: datetime,
        lanes: Sequence[int] | None = None,
    ) -> list[ClaimedSend]:
        """Claim up to ``limit`` due sends (of ``lanes`` only, when given), transactional
        lane first, then the longest waiting: they become IN_PROGRESS and not due again
        before ``lease_until``.

        PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent dispatchers (in this or another
        process) take disjoint sets. SQLite: the unit of work holds the one write lock.
        """
        # One read of the columns dispatch needs (Core rows: no ORM objects), one
        # UPDATE per app naming the send ids, and the devices only of sends that have
        # had a pass (a first pass has none stored yet).
        due = select(*_CLAIM_COLUMNS).where(
            SendRow.status.in_(ACTIVE_STATUSES), SendRow.next_attempt_at <= now
        )
        if lanes is not None:
            due = due.where(SendRow.lane.in_(list(lanes)))
        rows = (
            await self._session.execute(
                due.order_by(SendRow.lane, SendRow.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        if not rows:
            return []
        claimed = [_claimed(row) for row in rows]
        by_app: dict[str, list[str]] = defaultdict(list)
        for send in claimed:
            by_app[send.app_id].append(send.send_id)
        for app_id, send_ids in by_app.items():
            await self._session.execute(
                update(SendRow)
                .where(SendRow.app_id == app_id, SendRow.send_id.in_(send_ids))
                .values(status=SendStatus.IN_PROGRESS.value, next_attempt_at=lease_until)
                .execution_options(synchronize_session=False)
            )
        retried = [(send.app_id, send.send_id) for send in claimed if send.passes > 0]
        if retried:
            by_key = {(send.app_id, send.send_id): send for send in claimed}
            devices = await self._session.scalars(
                select(SendDeviceRow).where(
                    pairs_in(SendDeviceRow.app_id, SendDeviceRow.send_id, retried)
                )
            )
            for device in devices:
                by_key[(device.app_id, device.send_id)].devices[device.device_id] = DeviceState(
                    device_id=device.device_id,
                    provider=device.provider,
                    platform=device.platform,
                    status=DeviceStatus(device.status),
                    requests=device.requests,
                    tries=device.tries,
                    apns_id=device.apns_id,
                    reason=device.reason,
                    invalidated_at=device.invalidated_at,
                )
        return claimed

    async def record(self, results: Iterable[PassResult]) -> None:
        """Write what dispatch passes made of their sends: status and schedule, devices
        (new ones inserted), attempts appended.

        Four statements per batch whatever its size, each an executemany of one
        compiled statement (no SQL built per row): UPDATE of the sends, UPDATE of the
        devices already stored, INSERT of the new devices, INSERT of the attempts.
        """
        sends: list[dict[str, Any]] = []
        stored_devices: list[dict[str, Any]] = []
        new_devices: list[dict[str, Any]] = []
        attempts: list[dict[str, Any]] = []
        for result in results:
            send = result.send
            sends.append(
                {
                    "key_app_id": send.app_id,
                    "key_send_id": send.send_id,
                    "status": result.status.value,
                    "next_attempt_at": result.next_attempt_at,
                    "passes": send.passes + (1 if result.counted_pass else 0),
                    "requests": send.requests,
                    "failure_reason": result.failure_reason,
                    "suppressed_reason": result.suppressed_reason,
                    "completed_at": result.completed_at,
                }
            )
            for device in send.devices.values():
                values = _device_values(send, device)
                if device.stored:
                    stored_devices.append(
                        {
                            "key_app_id": send.app_id,
                            "key_send_id": send.send_id,
                            "key_device_id": device.device_id,
                            **values,
                        }
                    )
                else:
                    new_devices.append(
                        {
                            "app_id": send.app_id,
                            "send_id": send.send_id,
                            "device_id": device.device_id,
                            "invalidation_reported": False,
                            **values,
                        }
                    )
            attempts.extend(_attempt_values(send, attempt) for attempt in result.attempts)
        if sends:
            await self._session.execute(_UPDATE_SENDS, sends)
        if stored_devices:
            await self._session.execute(_UPDATE_DEVICES, stored_devices)
        if new_devices:
            await self._session.execute(_INSERT_DEVICES, new_devices)
        if attempts:
            await self._session.execute(_INSERT_ATTEMPTS, attempts)

    async def release(self, keys: Sequence[tuple[str, str]], at: datetime) -> None:
        """Give claimed sends back, due again at ``at`` (consent could not be asked)."""
        if not keys:
            return
        await self._session.execute(
            update(SendRow)
            .where(
                pairs_in(SendRow.app_id, SendRow.send_id, keys),
                SendRow.status.in_(ACTIVE_STATUSES),
            )
            .values(next_attempt_at=at)
            .execution_options(synchronize_session=False)
        )

    async def erase_user(self, app_id: str, user_id: str, before: datetime | None) -> int:
        """Delete the user's sends (their devices and attempts go with them) accepted
        before ``before`` (every one when None); returns how many."""
        query = delete(SendRow).where(SendRow.app_id == app_id, SendRow.user_id == user_id)
        if before is not None:
            query = query.where(SendRow.created_at < before)
        result = await self._session.execute(
            query.returning(SendRow.send_id).execution_options(synchronize_session=False)
        )
        return len(result.all())

    async def page_of_user(
        self, app_id: str, user_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[DeliveryRecord]:
        """Up to ``limit`` of the user's sends after ``after`` (accepted at, send id),
        oldest first, with their devices and attempts (ExportUserData): three queries."""
        query = select(SendRow).where(SendRow.app_id == app_id, SendRow.user_id == user_id)
        if after is not None:
            query = query.where(tuple_(SendRow.created_at, SendRow.send_id) > after)
        rows = (
            await self._session.scalars(
                query.order_by(SendRow.created_at, SendRow.send_id).limit(limit)
            )
        ).all()
        ids = [row.send_id for row in rows]
        if not ids:
            return []
        devices: dict[str, list[SendDeviceRow]] = defaultdict(list)
        for device in await self._session.scalars(
            select(SendDeviceRow)
            .where(SendDeviceRow.app_id == app_id, SendDeviceRow.send_id.in_(ids))
            .order_by(SendDeviceRow.send_id, SendDeviceRow.device_id)
        ):
            devices[device.send_id].append(device)
        attempts: dict[tuple[str, str], list[AttemptRecord]] = defaultdict(list)
        for attempt in await self._session.scalars(
            select(AttemptRow)
            .where(AttemptRow.app_id == app_id, AttemptRow.send_id.in_(ids))
            .order_by(AttemptRow.attempt_id)
        ):
            attempts[(attempt.send_id, attempt.device_id)].append(_attempt(attempt))
        records: list[DeliveryRecord] = []
        for row in rows:
            send = resources_pb2.Send()
            send.ParseFromString(row.send)
            records.append(
                DeliveryRecord(
                    send=send,
                    kind=Kind(row.kind),
                    status=SendStatus(row.status),
                    failure_reason=row.failure_reason,
                    suppressed_reason=row.suppressed_reason,
                    devices=[
                        DeviceRecord(
                            device_id=device.device_id,
                            provider=device.provider,
                            platform=device.platform,
                            status=DeviceStatus(device.status),
                            attempts=attempts.get((row.send_id, device.device_id), []),
                        )
                        for device in devices.get(row.send_id, [])
                    ],
                    accepted_at=row.created_at,
                    completed_at=row.completed_at,
                )
            )
        return records

    async def pending_invalidations(self, limit: int) -> list[PendingInvalidation]:
        """Dead tokens not yet reported to consent, oldest sends first."""
        rows = await self._session.scalars(pending_invalidations_query(limit))
        return [
            PendingInvalidation(
                app_id=row.app_id,
                send_id=row.send_id,
                device_id=row.device_id,
                provider=row.provider,
                reason=row.reason,
                invalidated_at=row.invalidated_at,
            )
            for row in rows
        ]

    async def mark_reported(self, reported: Sequence[PendingInvalidation]) -> None:
        """Consent has been told about these dead tokens."""
        if not reported:
            return
        await self._session.execute(
            update(SendDeviceRow)
            .where(
                or_(
                    *(
                        and_(
                            SendDeviceRow.app_id == item.app_id,
                            SendDeviceRow.send_id == item.send_id,
                            SendDeviceRow.device_id == item.device_id,
                        )
                        for item in reported
                    )
                )
            )
            .values(invalidation_reported=True)
            .execution_options(synchronize_session=False)
        )


def pending_invalidations_query(limit: int) -> Select[SendDeviceRow]:
    """The devices whose dead token consent has not been told about, read through the
    partial index ix_send_devices_pending_invalidations. Its predicate's terms are
    repeated as the index has them: SQLite uses a partial index only for a query
    whose terms match (``= 0``; ``IS 0``, what ``.is_(False)`` writes, does not)."""
    return (
        select(SendDeviceRow)
        .where(
            SendDeviceRow.status == DeviceStatus.TOKEN_DEAD.value,
            SendDeviceRow.invalidation_reported == false(),
        )
        .limit(limit)
    )


def _send_values(new: NewSend, kind: Kind, now: datetime) -> dict[str, Any]:
    send = new.proto
    return {
        "app_id": new.app_id,
        "send_id": send.send_id,
        "user_id": send.user_id,
        "category_id": send.category_id,
        "topic_id": send.topic_id,
        "kind": kind.value,
        "campaign_id": send.campaign_id,
        "variant_id": send.variant_id,
        "trigger_id": send.trigger_id,
        "priority": int(send.priority),
        "send": send.SerializeToString(deterministic=True),
        "expires_at": new.expires_at,
        "latest_send_at": new.latest_send_at,
        "lane": kind.lane,
        "status": SendStatus.PENDING.value,
        "next_attempt_at": now,
        "passes": 0,
        "requests": 0,
        "failure_reason": "",
        "suppressed_reason": 0,
        "traceparent": send.traceparent,
        "tracestate": send.tracestate,
        "created_at": now,
        "completed_at": None,
    }


_CLAIM_COLUMNS = (
    SendRow.app_id,
    SendRow.send_id,
    SendRow.user_id,
    SendRow.category_id,
    SendRow.topic_id,
    SendRow.kind,
    SendRow.send,
    SendRow.expires_at,
    SendRow.latest_send_at,
    SendRow.passes,
    SendRow.requests,
)


def _claimed(row: Row[*tuple[Any, ...]]) -> ClaimedSend:
    send = resources_pb2.Send()
    send.ParseFromString(row.send)
    return ClaimedSend(
        app_id=row.app_id,
        send_id=row.send_id,
        user_id=row.user_id,
        category_id=row.category_id,
        topic_id=row.topic_id,
        kind=Kind(row.kind),
        send=send,
        expires_at=row.expires_at,
        latest_send_at=row.latest_send_at,
        passes=row.passes,
        requests=row.requests,
    )


def _device_values(send: ClaimedSend, device: DeviceState) -> dict[str, Any]:
    return {
        "provider": device.provider,
        "platform": device.platform,
        "status": device.status.value,
        "requests": device.requests,
        "tries": device.tries,
        "apns_id": device.apns_id,
        "reason": device.reason,
        "invalidated_at": device.invalidated_at,
    }


def _attempt_values(send: ClaimedSend, attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "app_id": send.app_id,
        "send_id": send.send_id,
        "device_id": attempt.device_id,
        "retry_number": attempt.retry_number,
        "provider": attempt.provider,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "outcome": attempt.outcome.value,
        "http_status": attempt.http_status,
        "reason": attempt.reason,
        "apns_id": attempt.apns_id,
        "fcm_message_id": attempt.fcm_message_id,
        "requests": attempt.requests,
        "retry_after_s": attempt.retry_after_s,
        "next_attempt_at": attempt.next_attempt_at,
    }


def _attempt(row: AttemptRow) -> AttemptRecord:
    return AttemptRecord(
        device_id=row.device_id,
        retry_number=row.retry_number,
        provider=row.provider,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=AttemptOutcome(row.outcome),
        http_status=row.http_status,
        reason=row.reason,
        apns_id=row.apns_id,
        fcm_message_id=row.fcm_message_id,
        requests=row.requests,
        retry_after_s=row.retry_after_s,
        next_attempt_at=row.next_attempt_at,
    )
