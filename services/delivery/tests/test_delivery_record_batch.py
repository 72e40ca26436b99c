"""A dispatch batch's results are written in a few statements whatever the batch's size
(executemany UPDATEs and multi-row INSERTs), on SQLite and PostgreSQL, and every send,
device and attempt reads back as written."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine.default import CACHE_HIT

from pushwarden.common.v1 import content_pb2, types_pb2
from pushwarden.delivery.v1 import resources_pb2
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.delivery.domain.engagement import NewAssignment, Subject, SubjectKind
from pushwarden.services.delivery.domain.sends import (
    AttemptOutcome,
    AttemptRecord,
    DeviceStatus,
    Kind,
    NewSend,
    SendStatus,
)
from pushwarden.services.delivery.storage.sends import DeviceState, PassResult
from pushwarden.services.delivery.storage.uow import unit_of_work_factory

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=2)
SENDS = 1200


@pytest.fixture
async def database(any_database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async_engine_for(DatabaseSettings(any_database_url, pool_size=3)))
    try:
        yield database
    finally:
        await database.dispose()


class Statements:
    """Counts what reaches the driver: one per cursor call, an executemany counting once."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        self.many = 0
        event.listen(database.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1
        self.many += bool(args[-1])  # executemany

    def reset(self) -> None:
        self.count = self.many = 0


def attempt(device_id: str, retry: int, outcome: AttemptOutcome, at: dt.datetime) -> AttemptRecord:
    return AttemptRecord(
        device_id=device_id,
        retry_number=retry,
        provider=types_pb2.PROVIDER_APNS,
        started_at=at,
        finished_at=at + dt.timedelta(milliseconds=5),
        outcome=outcome,
        http_status=200 if outcome is AttemptOutcome.DELIVERED else 0,
        reason="" if outcome is AttemptOutcome.DELIVERED else "ServiceUnavailable",
        apns_id=f"00000000-0000-4000-8000-{retry:012d}",
        fcm_message_id="",
        requests=1,
        retry_after_s=None,
        next_attempt_at=None if outcome is AttemptOutcome.DELIVERED else at + LEASE,
    )


async def test_a_batch_of_results_is_written_in_a_few_statements(database: Database) -> None:
    uow = unit_of_work_factory(database)
    ids = [f"s{i:05d}" for i in range(SENDS)]
    async with uow() as work:
        await work.sends.insert_new(
            [
                (
                    NewSend(
                        "shop",
                        resources_pb2.Send(
                            send_id=i, user_id=f"u-{i}", content=content_pb2.Content(title="t")
                        ),
                    ),
                    Kind.MARKETING,
                )
                for i in ids
            ],
            T0,
        )
        await work.commit()
    statements = Statements(database)

    # First pass: two new devices per send, one delivered and one to retry.
    async with uow() as work:
        claimed = await work.sends.claim_due(T0, SENDS, T0 + LEASE)
        assert len(claimed) == SENDS
        results = []
        for send in claimed:
            for device_id, status in (("d-ok", DeviceStatus.DELIVERED), ("d-retry", None)):
                send.devices[device_id] = DeviceState(
                    device_id=device_id,
                    provider=types_pb2.PROVIDER_APNS,
                    platform=types_pb2.PLATFORM_IOS,
                    status=status or DeviceStatus.RETRYING,
                    requests=1,
                    tries=1,
                    apns_id=f"apns-{send.send_id}-{device_id}"[:36],
                    reason="" if status else "ServiceUnavailable",
                    stored=False,
                )
            send.requests = 2
            results.append(
                PassResult(
                    send,
                    SendStatus.IN_PROGRESS,
                    T0 + dt.timedelta(seconds=1),
                    attempts=[
                        attempt("d-ok", 0, AttemptOutcome.DELIVERED, T0),
                        attempt("d-retry", 0, AttemptOutcome.RETRYABLE, T0),
                    ],
                )
            )
        statements.reset()
        await work.sends.record(results)
        first = statements.count, statements.many
        await work.commit()
    # Each an executemany: UPDATE of every send, INSERT of 2,400 devices, INSERT of
    # 2,400 attempts.
    assert first == (3, 3), first

    # Second pass: the stored devices are updated; the retried one is delivered.
    later = T0 + dt.timedelta(seconds=1)
    async with uow() as work:
        claimed = await work.sends.claim_due(later, SENDS, later + LEASE)
        assert len(claimed) == SENDS
        results = []
        for send in claimed:
            assert {d.device_id: d.status for d in send.devices.values()} == {
                "d-ok": DeviceStatus.DELIVERED,
                "d-retry": DeviceStatus.RETRYING,
            }
            retried = send.devices["d-retry"]
            retried.status, retried.reason = DeviceStatus.DELIVERED, ""
            retried.tries, retried.requests = 2, 2
            send.requests = 3
            results.append(
                PassResult(
                    send,
                    SendStatus.DELIVERED,
                    later,
                    completed_at=later,
                    attempts=[attempt("d-retry", 1, AttemptOutcome.DELIVERED, later)],
                )
            )
        statements.reset()
        await work.sends.record(results)
        second = statements.count, statements.many
        await work.commit()
    # UPDATE of the sends, UPDATE of their 2,400 devices, INSERT of 1,200 attempts.
    assert second == (3, 3), second

    async with uow(read_only=True) as work:
        for send_id in (ids[0], ids[len(ids) // 2], ids[-1]):
            record = await work.sends.get("shop", send_id)
            assert record is not None
            assert record.status is SendStatus.DELIVERED
            assert record.completed_at == later
            assert [(d.device_id, d.status) for d in record.devices] == [
                ("d-ok", DeviceStatus.DELIVERED),
                ("d-retry", DeviceStatus.DELIVERED),
            ]
            tries = record.devices[1].attempts
            assert [(a.retry_number, a.outcome) for a in tries] == [
                (0, AttemptOutcome.RETRYABLE),
                (1, AttemptOutcome.DELIVERED),
            ]
            assert tries[0].next_attempt_at == T0 + LEASE
    # Nothing else was touched: the sends of the batch, and only they, are closed.
    async with uow() as work:
        assert await work.sends.claim_due(later + LEASE * 10, SENDS, later) == []


async def test_assignment_batches_of_any_size_share_one_compiled_insert(
    database: Database,
) -> None:
    """A campaign's pages of assignments go as parameters of one cached statement: built
    as a VALUES clause of literals, each page compiled anew (a fifth of delivery's CPU)."""
    cached: list[bool] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _m: bool) -> None:
        if statement.startswith("INSERT INTO assignments"):
            cached.append(context.cache_hit is CACHE_HIT)

    event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    subject = Subject(SubjectKind.CAMPAIGN, "spring")
    for first, size in ((0, 300), (300, 450), (750, 20)):
        items = [
            NewAssignment(f"user-{n}", f"user-{n}", "A", False, T0)
            for n in range(first, first + size)
        ]
        async with unit_of_work_factory(database)() as work:
            inserted = await work.assignments.insert_new("shop", subject, items, T0)
            again = await work.assignments.insert_new("shop", subject, items[:5], T0)
            await work.commit()
        assert inserted == {item.key for item in items}
        assert again == set()
    assert len(cached) == 6
    assert all(cached[1:]), cached
