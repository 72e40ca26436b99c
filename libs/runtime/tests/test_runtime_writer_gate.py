"""The SQLite writer gate: a process's write units of work queue in arrival order, RPC
handlers' ahead of background workers'; a cancelled waiter leaves the queue; a nested
write unit of work in the holding task goes on; PostgreSQL has no gate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from pushwarden.runtime.db import (
    WriterGate,
    _writer_gate,
    create_async_engine_for,
    mark_background_work,
    session_factory,
    unit_of_work,
)
from pushwarden.runtime.settings import DatabaseSettings


async def test_rpc_writers_go_before_background_writers_that_came_first(tmp_path: Path) -> None:
    engine = create_async_engine_for(DatabaseSettings(f"sqlite:///{tmp_path / 'g.db'}", 4))
    sessions = session_factory(engine)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with unit_of_work(sessions) as session:
            await session.execute(text("SELECT 1"))
            holding.set()
            await release.wait()
            order.append("first")

    async def writer(name: str, background: bool) -> None:
        if background:
            mark_background_work()
        async with unit_of_work(sessions) as session:
            await session.execute(text("SELECT 1"))
            order.append(name)

    try:
        holder = asyncio.create_task(first())
        await holding.wait()
        gate = _writer_gate(engine)
        assert gate is not None
        tasks = [asyncio.create_task(writer("background-1", True))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(writer("background-2", True)))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(writer("rpc", False)))
        await asyncio.sleep(0.01)
        assert gate.waiting == 3
        release.set()
        await asyncio.gather(holder, *tasks)
        assert order == ["first", "rpc", "background-1", "background-2"]
        assert gate.waiting == 0
    finally:
        await engine.dispose()


async def test_a_cancelled_waiter_leaves_the_queue_and_a_nested_write_goes_on() -> None:
    gate = WriterGate()
    order: list[str] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.held(), gate.held():  # nested in the same task: no self-deadlock
            inside.set()
            await release.wait()
        order.append("holder")

    async def wait(name: str) -> None:
        async with gate.held():
            order.append(name)

    holder = asyncio.create_task(hold())
    await inside.wait()
    cancelled = asyncio.create_task(wait("cancelled"))
    later = asyncio.create_task(wait("later"))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    release.set()
    await asyncio.gather(holder, later)
    assert order == ["holder", "later"]
    assert gate.waiting == 0


@pytest.mark.storage
async def test_postgres_writers_do_not_queue(any_database_url: str) -> None:
    engine = create_async_engine_for(DatabaseSettings(any_database_url, 2))
    try:
        gate = _writer_gate(engine)
        assert (gate is None) == (engine.dialect.name == "postgresql")
    finally:
        await engine.dispose()
