"""The statements the dispatch loops repeat, explained by the database itself (SQLite
and PostgreSQL): each must be served by an index in the order it asks for, so its cost
does not grow with the number of sends already handled. Captured from the repositories'
own methods as they run, so a change to a query is checked as it ships."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from pushwarden.runtime.app import open_database
from pushwarden.runtime.db import is_sqlite
from pushwarden.runtime.servicetest import local_test_config
from pushwarden.services.scheduler.bootstrap import MIGRATIONS
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.domain.intents import Lane, NewIntent
from pushwarden.services.scheduler.storage.uow import SchedulerUow, unit_of_work_factory

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
LANES = [Lane.TRANSACTIONAL, Lane.MARKETING]


@pytest.fixture
async def uow(any_database_url: str) -> AsyncIterator[SchedulerUow]:
    database = open_database(local_test_config(SchedulerConfig, any_database_url), MIGRATIONS)
    try:
        yield unit_of_work_factory(database)
    finally:
        await database.dispose()


async def explained(
    uow: SchedulerUow, sqlite: bool, run: Callable[[Any], Awaitable[object]], marker: str
) -> list[str]:
    """The plan of the first statement containing ``marker`` that ``run(work)`` issued."""
    captured: list[tuple[str, Any]] = []
    async with uow() as work:
        connection = await work.session.connection()
        sync_engine = connection.engine.sync_engine

        def capture(_c: Any, _cur: Any, statement: str, params: Any, _x: Any, _m: bool) -> None:
            captured.append((statement, params))

        event.listen(sync_engine, "before_cursor_execute", capture)
        try:
            await run(work)
        finally:
            event.remove(sync_engine, "before_cursor_execute", capture)
        statement, params = next((s, p) for s, p in captured if marker in s)
        if sqlite:
            plan = await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
        else:
            # Empty tables are cheapest to scan whole: ask whether an index can serve.
            await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = await connection.exec_driver_sql(f"EXPLAIN {statement}", params)
        return [str(row) for row in plan.all()]


async def test_the_outbox_claim_reads_its_index_in_order_without_sorting(
    uow: SchedulerUow, any_database_url: str
) -> None:
    # Ordered by decision time, this sorted the whole outbox on every claim: 45 ms on
    # SQLite and 70 ms on PostgreSQL with 100k sends waiting for a slower delivery.
    lines = await explained(
        uow,
        is_sqlite(any_database_url),
        lambda work: work.intents.claim_outbox(NOW, 500, NOW + timedelta(minutes=1), LANES),
        "intents.state =",
    )
    assert any("ix_intents_state_lane_due_at" in line for line in lines), lines
    assert not any("TEMP B-TREE" in line or "Sort" in line for line in lines), lines


async def test_the_dispatch_claim_reads_its_index_in_order_without_sorting(
    uow: SchedulerUow, any_database_url: str
) -> None:
    lines = await explained(
        uow,
        is_sqlite(any_database_url),
        lambda work: work.intents.claim_due(NOW, 500, NOW + timedelta(minutes=1), LANES),
        "intents.state =",
    )
    assert any("ix_intents_state_lane_due_at" in line for line in lines), lines
    assert not any("TEMP B-TREE" in line or "Sort" in line for line in lines), lines


async def test_the_finished_campaign_check_does_not_walk_a_campaigns_sends(
    uow: SchedulerUow, any_database_url: str
) -> None:
    # Asked after every fan-out pass and every half second while idle: without an index
    # by (app, campaign, state), SQLite read every intent (30 ms at 200k).
    sqlite = is_sqlite(any_database_url)
    lines = await explained(
        uow, sqlite, lambda work: work.campaigns.finished_fanouts(1), "FROM campaigns"
    )
    assert not any("SCAN intents" in line or "Seq Scan on intents" in line for line in lines)
    if sqlite:
        assert any("ix_intents_app_id_campaign_id_state" in line for line in lines), lines


async def test_a_claim_updates_its_batch_through_the_primary_key(
    uow: SchedulerUow, any_database_url: str
) -> None:
    # Written as a row-value IN (VALUES ...), SQLite scanned every intent for each claim,
    # lease check and hand-over (58 ms a statement at 100k intents in the e2e bench).
    async with uow() as work:
        await work.intents.add(
            [
                NewIntent(
                    app_id="shop",
                    send_id=f"send-{n}",
                    user_id=f"user-{n}",
                    lane=Lane.MARKETING,
                    category_id="promos",
                    due_at=NOW - timedelta(minutes=1),
                    created_at=NOW - timedelta(minutes=1),
                )
                for n in range(3)
            ]
        )
        await work.commit()
    sqlite = is_sqlite(any_database_url)
    lines = await explained(
        uow,
        sqlite,
        lambda work: work.intents.claim_due(NOW, 500, NOW + timedelta(minutes=1), LANES),
        "UPDATE intents SET claimed_until",
    )
    assert not any("SCAN intents" in line or "Seq Scan on intents" in line for line in lines)
    if sqlite:
        assert any("(app_id=? AND send_id=?)" in line for line in lines), lines
