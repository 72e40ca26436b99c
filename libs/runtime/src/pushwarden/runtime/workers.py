"""Background workers hosted by a service app (outbox, dispatch loop, feed followers).

A worker is a named coroutine function that runs until it is asked to stop::

    async def dispatch(ctx: WorkerContext) -> None:
        while not ctx.stopping:
            claimed = await claim_due_batch()
            if not claimed:
                await ctx.sleep(0.5)   # returns at once when shutdown begins

:class:`WorkerHost` starts every worker once the server serves and stops them in the
graceful shutdown, after in-flight RPCs have drained. A worker that raises is logged with
its traceback and restarted after a backoff that doubles up to a ceiling (and starts over
once a run has lasted a while); one that returns while the app is still running is
restarted the same way. A worker is never silently gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pushwarden.runtime.db import mark_background_work

logger = logging.getLogger(__name__)

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# A run that lasted this long was healthy: the next failure starts the backoff afresh.
HEALTHY_RUN_S = 60.0


class WorkerContext:
    """What a running worker sees: whether to stop, and a sleep that shutdown cuts short."""

    def __init__(self, name: str, stop: asyncio.Event) -> None:
        self.name = name
        self._stop = stop

    @property
    def stopping(self) -> bool:
        """True once the app has begun to shut down."""
        return self._stop.is_set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until shutdown begins; returns True when stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    async def wait_stopping(self) -> None:
        """Wait until shutdown begins."""
        await self._stop.wait()

    async def idle(self, wake: asyncio.Event, seconds: float) -> None:
        """Wait up to ``seconds`` for ``wake`` (new work in this process), returning at
        once when shutdown begins: how a polling loop waits when it found nothing."""
        waits = [
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=max(0.0, seconds), return_when="FIRST_COMPLETED")
        finally:
            for waiter in waits:
                waiter.cancel()


@dataclass(frozen=True, slots=True)
class Worker:
    """A named background task: ``run(ctx)`` loops until ``ctx.stopping``.

    ``urgent`` work (a transactional lane) has its SQLite write transactions queued with
    the RPC handlers', ahead of the other workers' (see ``db.WriterGate``)."""

    name: str
    run: Callable[[WorkerContext], Awaitable[None]]
    urgent: bool = False


@dataclass(slots=True)
class WorkerState:
    """What the host knows of one worker (tests and health read it)."""

    name: str
    starts: int = 0
    failures: int = 0
    running: bool = False


class WorkerHost:
    """Runs workers under supervision: restart with backoff, stop on shutdown."""

    def __init__(
        self,
        workers: Sequence[Worker],
        *,
        initial_backoff_s: float = INITIAL_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        names = [worker.name for worker in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique: {names}")
        self._workers = tuple(workers)
        self._initial = initial_backoff_s
        self._max = max_backoff_s
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.states = {worker.name: WorkerState(worker.name) for worker in workers}

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run."""
        return bool(self._tasks)

    def start(self) -> None:
        """Start every worker (call once the server serves)."""
        if self._tasks:
            raise RuntimeError("workers already started")
        for worker in self._workers:
            task = asyncio.create_task(self._supervise(worker), name=f"worker:{worker.name}")
            self._tasks.append(task)

    async def stop(self, grace_s: float) -> None:
        """Ask every worker to stop; cancel those still running after ``grace_s``."""
        self._stop.set()
        if not self._tasks:
            return
        done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
        for task in pending:
            logger.warning("worker did not stop in time; cancelling", extra={"worker": task})
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        del done

    async def _supervise(self, worker: Worker) -> None:
        if not worker.urgent:
            mark_background_work()
        state = self.states[worker.name]
        ctx = WorkerContext(worker.name, self._stop)
        backoff = self._initial
        while not self._stop.is_set():
            state.starts += 1
            state.running = True
            began = time.monotonic()
            try:
                await worker.run(ctx)
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception:
                state.failures += 1
                logger.exception(
                    "worker crashed; restarting",
                    extra={"worker": worker.name, "failures": state.failures, "backoff_s": backoff},
                )
            else:
                if self._stop.is_set():
                    state.running = False
                    break
                logger.warning(
                    "worker returned while the app runs; restarting",
                    extra={"worker": worker.name, "backoff_s": backoff},
                )
            state.running = False
            if time.monotonic() - began >= HEALTHY_RUN_S:
                backoff = self._initial
            if await ctx.sleep(backoff):
                break
            backoff = min(backoff * 2, self._max)
        state.running = False
