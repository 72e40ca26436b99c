"""The SQLite writer gate: a process's write units of work queue in arrival order, RPC
handlers' ahead of background workers' (and of an RPC's writes inside
``background_writes``); a cancelled waiter leaves the queue; a nested
write unit of work in the holding task goes on; PostgreSQL has no gate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from pushwarden.runtime.db import (
    WriterGate,
    background_writes,
    create_async_engine_for,
    mark_background_work,
    session_factory,
    unit_of_work,
    writer_gate,
)
from pushwarden.runtime.settings import DatabaseSettings
from pushwarden.runtime.workers import Worker, WorkerContext, WorkerHost


async def test_rpc_writers_go_before_background_writers_that_came_first(tmp_path: Path) -> None:
    async with HeldGate(tmp_path, "g.db") as held:

        async def writer(name: str, background: bool) -> None:
            if background:
                mark_background_work()
            async with unit_of_work(held.sessions) as session:
                await session.execute(text("SELECT 1"))
                held.order.append(name)

        tasks = [asyncio.create_task(writer("background-1", True))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(writer("background-2", True)))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(writer("rpc", False)))
        await asyncio.sleep(0.01)
        assert held.gate.waiting == 3
        held.release()
        assert held.holder is not None
        await asyncio.gather(held.holder, *tasks)
        assert held.order == ["first", "rpc", "background-1", "background-2"]
        assert held.gate.waiting == 0


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
        gate = writer_gate(engine)
        assert (gate is None) == (engine.dialect.name == "postgresql")
    finally:
        await engine.dispose()


async def test_an_urgent_workers_writes_go_before_the_other_workers(tmp_path: Path) -> None:
    """Workers are background work, except an ``urgent`` one (a transactional lane): its
    write queues with the RPCs', ahead of a background worker's that came first."""
    async with HeldGate(tmp_path, "w.db") as held:

        def writer(name: str, waiting: int) -> Callable[[WorkerContext], Awaitable[None]]:
            async def run(ctx: WorkerContext) -> None:
                await until(lambda: held.gate.waiting >= waiting)  # queue behind the ones before
                async with unit_of_work(held.sessions) as session:
                    await session.execute(text("SELECT 1"))
                    held.order.append(name)
                await ctx.wait_stopping()

            return run

        host = WorkerHost(
            [
                Worker("marketing", writer("marketing", 0)),
                Worker("transactional", writer("transactional", 1), urgent=True),
            ]
        )
        host.start()
        try:
            await until(lambda: held.gate.waiting == 2)
            held.release()
            assert held.holder is not None
            await held.holder
            await until(lambda: len(held.order) == 3)
            assert held.order == ["first", "transactional", "marketing"]
        finally:
            await host.stop(grace_s=5)


async def test_an_rpc_s_background_writes_queue_behind_a_later_rpc_s_and_only_in_the_block(
    tmp_path: Path,
) -> None:
    """A bulk RPC (a campaign's batch) writes inside ``background_writes``: it queues behind
    a plain RPC's write that came later; after the block its task writes first again."""
    async with HeldGate(tmp_path, "b.db") as held:

        async def bulk() -> None:
            with background_writes():
                async with unit_of_work(held.sessions):
                    held.order.append("bulk")
            async with unit_of_work(held.sessions):
                held.order.append("bulk, after the block")

        async def rpc() -> None:
            async with unit_of_work(held.sessions):
                held.order.append("rpc")

        tasks = [asyncio.create_task(bulk())]
        await until(lambda: held.gate.waiting == 1)
        tasks.append(asyncio.create_task(rpc()))
        await until(lambda: held.gate.waiting == 2)
        held.release()
        assert held.holder is not None
        await asyncio.gather(held.holder, *tasks)
        assert held.order == ["first", "rpc", "bulk", "bulk, after the block"]
        assert held.gate.taken == {"first": 3, "background": 1}


class HeldGate:
    """A SQLite engine whose writer gate a first write holds until :meth:`release`; the
    writes that follow append their names to ``order`` after ``"first"``."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.engine = create_async_engine_for(DatabaseSettings(f"sqlite:///{tmp_path / name}", 4))
        self.sessions = session_factory(self.engine)
        self.order: list[str] = []
        gate = writer_gate(self.engine)
        assert gate is not None
        self.gate = gate
        self._holding = asyncio.Event()
        self._release = asyncio.Event()
        self.holder: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HeldGate:
        self.holder = asyncio.create_task(self._first())
        await self._holding.wait()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.engine.dispose()

    async def _first(self) -> None:
        async with unit_of_work(self.sessions) as session:
            await session.execute(text("SELECT 1"))
            self._holding.set()
            await self._release.wait()
            self.order.append("first")

    def release(self) -> None:
        """Let the first write commit."""
        self._release.set()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (up to 10 s) until ``condition()`` holds."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")
