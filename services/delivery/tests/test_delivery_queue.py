"""The dispatch queue on SQLite and PostgreSQL: the transactional lane is claimed first,
a claim is a lease that runs out, and on PostgreSQL two dispatchers whose claims overlap
in time take disjoint sends (FOR UPDATE SKIP LOCKED)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from pushwarden.common.v1 import content_pb2
from pushwarden.delivery.v1 import resources_pb2
from pushwarden.runtime.db import Database, create_async_engine_for, is_sqlite
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.services.delivery.domain.sends import Kind, NewSend, SendStatus
from pushwarden.services.delivery.storage.sends import pending_invalidations_query
from pushwarden.services.delivery.storage.uow import DeliveryUow, unit_of_work_factory

T0 = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=2)


@pytest.fixture
async def uow(any_database_url: str) -> AsyncIterator[DeliveryUow]:
    database = Database(create_async_engine_for(DatabaseSettings(any_database_url, pool_size=3)))
    try:
        yield unit_of_work_factory(database)
    finally:
        await database.dispose()


def new(send_id: str) -> NewSend:
    return NewSend(
        "shop",
        resources_pb2.Send(
            send_id=send_id,
            user_id=f"user-{send_id}",
            category_id="c",
            content=content_pb2.Content(title="t"),
        ),
    )


async def store(uow: DeliveryUow, kind: Kind, *ids: str, at: dt.datetime = T0) -> None:
    async with uow() as work:
        assert await work.sends.insert_new([(new(i), kind) for i in ids], at) == set(ids)
        await work.commit()


async def claim(
    uow: DeliveryUow, limit: int, now: dt.datetime = T0, lanes: tuple[int, ...] | None = None
) -> list[str]:
    async with uow() as work:
        claimed = await work.sends.claim_due(now, limit, now + LEASE, lanes)
        await work.commit()
    return [c.send_id for c in claimed]


async def test_the_transactional_lane_is_claimed_before_older_marketing(uow: DeliveryUow) -> None:
    await store(uow, Kind.MARKETING, "m1", "m2", "m3", at=T0 - dt.timedelta(minutes=5))
    await store(uow, Kind.TRANSACTIONAL, "t1")
    assert await claim(uow, 2) == ["t1", "m1"]
    assert await claim(uow, 10, lanes=(Kind.TRANSACTIONAL.lane,)) == []
    assert await claim(uow, 10) == ["m2", "m3"]
    async with uow(read_only=True) as work:
        record = await work.sends.get("shop", "t1")
    assert record is not None
    assert record.status is SendStatus.IN_PROGRESS


async def test_a_claim_is_a_lease_that_runs_out(uow: DeliveryUow) -> None:
    await store(uow, Kind.MARKETING, "a")
    await store(uow, Kind.MARKETING, "later", at=T0 + dt.timedelta(seconds=30))
    assert await claim(uow, 10) == ["a"]
    assert await claim(uow, 10, T0 + dt.timedelta(seconds=29)) == []
    assert await claim(uow, 10, T0 + dt.timedelta(seconds=30)) == ["later"]
    # Nobody recorded a result for "a": once its lease ends it is due again.
    assert await claim(uow, 10, T0 + LEASE) == ["a"]


async def test_a_repeated_insert_keeps_the_first_row(uow: DeliveryUow) -> None:
    await store(uow, Kind.MARKETING, "x")
    async with uow() as work:
        assert await work.sends.insert_new([(new("x"), Kind.TRANSACTIONAL)], T0) == set()
        assert await work.sends.existing("shop", ["x", "y"]) == {"x"}
        await work.commit()
    async with uow(read_only=True) as work:
        record = await work.sends.get("shop", "x")
    assert record is not None
    assert record.kind is Kind.MARKETING


async def test_overlapping_claims_on_postgresql_take_disjoint_sends(
    uow: DeliveryUow, any_database_url: str
) -> None:
    if is_sqlite(any_database_url):
        pytest.skip("SQLite has one writer: claims cannot overlap")
    ids = [f"s{i:02d}" for i in range(10)]
    await store(uow, Kind.MARKETING, *ids)
    async with uow() as first:
        mine = await first.sends.claim_due(T0, 4, T0 + LEASE)
        # The first claim is not committed yet: its rows stay locked, and are skipped.
        async with uow() as second:
            theirs = await second.sends.claim_due(T0, 10, T0 + LEASE)
            await second.commit()
        await first.commit()
    assert [c.send_id for c in mine] == ids[:4]
    assert [c.send_id for c in theirs] == ids[4:]


async def test_the_dead_token_scan_reads_its_partial_index(
    uow: DeliveryUow, any_database_url: str
) -> None:
    # The repository's own statement, explained by the database: the scan after every
    # dispatch pass must not read every device ever sent to.
    async with uow(read_only=True) as work:
        connection = await work.session.connection()
        compiled = pending_invalidations_query(200).compile(dialect=connection.dialect)
        params = compiled.construct_params()
        if is_sqlite(any_database_url):
            positional = tuple(params[name] for name in compiled.positiontup or ())
            plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)
        else:
            # An empty table is cheapest to scan whole: make the planner show whether
            # the index can serve the query at all.
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = await connection.exec_driver_sql(f"EXPLAIN {compiled}", params)
        lines = [str(row) for row in plan.all()]
    assert any("ix_send_devices_pending_invalidations" in line for line in lines), lines
