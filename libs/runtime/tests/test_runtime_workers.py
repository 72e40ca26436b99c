"""Workers hosted by a ServiceApp: started once the server serves, stopped in the graceful
shutdown after in-flight RPCs, restarted with backoff after a crash (never silently gone)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.workers import Worker, WorkerContext, WorkerHost

APP = Path(__file__).with_name("runtime_worker_app.py")
DEADLINE_S = 30.0


async def _line(process: asyncio.subprocess.Process, prefix: str) -> str:
    assert process.stdout is not None
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), DEADLINE_S)
        if not raw:
            raise AssertionError(f"the app ended before printing {prefix!r}")
        if raw.decode().startswith(prefix):
            return raw.decode().strip()


async def test_sigterm_drains_rpcs_before_the_workers_stop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_WDEMO_")}
    env |= {
        "PUSHWARDEN_WDEMO_HOST": "127.0.0.1",
        "PUSHWARDEN_WDEMO_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        # The worker prints the port it finds on the running server: it started after it.
        port = int((await _line(process, "port ")).split()[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            sleep: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/test.runtime.Demo/Sleep"
            )
            call = sleep(b"", timeout=DEADLINE_S)
            await _line(process, "in-flight")
            process.send_signal(signal.SIGTERM)
            assert await call == b"slept"  # the in-flight RPC finished
        assert await _line(process, "worker stopped") == "worker stopped in_flight=0"
        assert await asyncio.wait_for(process.wait(), DEADLINE_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_channel_opened_in_bootstrap_works_in_the_workers(tmp_path: Path) -> None:
    """run_main bootstraps on the loop that serves, so a peer channel made in bootstrap
    belongs to it (made before that loop, every call on it failed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_WDEMO_")}
    env |= {
        "PUSHWARDEN_WDEMO_HOST": "127.0.0.1",
        "PUSHWARDEN_WDEMO_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert await _line(process, "peer ") == "peer UNAVAILABLE"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), DEADLINE_S)


async def test_a_crashing_worker_is_logged_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []
    recovered = asyncio.Event()

    async def flaky(ctx: WorkerContext) -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        recovered.set()
        await ctx.wait_stopping()

    host = WorkerHost([Worker("flaky", flaky)], initial_backoff_s=0.05, max_backoff_s=1.0)
    with caplog.at_level(logging.ERROR, logger="pushwarden.runtime.workers"):
        host.start()
        await asyncio.wait_for(recovered.wait(), DEADLINE_S)
        await host.stop(grace_s=5)
    state = host.states["flaky"]
    assert (state.starts, state.failures, state.running) == (3, 2, False)
    assert runs[2] - runs[1] >= 2 * (runs[1] - runs[0]) * 0.9  # the backoff doubled
    crashes = [r for r in caplog.records if r.getMessage() == "worker crashed; restarting"]
    assert len(crashes) == 2
    assert crashes[0].exc_info is not None  # logged with its traceback
    assert "boom 1" in caplog.text


async def test_a_worker_that_returns_early_is_restarted_too() -> None:
    runs = 0
    third = asyncio.Event()

    async def quitter(ctx: WorkerContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()

    host = WorkerHost([Worker("quitter", quitter)], initial_backoff_s=0.01, max_backoff_s=0.02)
    host.start()
    await asyncio.wait_for(third.wait(), DEADLINE_S)
    await host.stop(grace_s=5)
    assert host.states["quitter"].starts >= 3


async def test_a_worker_ignoring_shutdown_is_cancelled_after_the_grace() -> None:
    cancelled = asyncio.Event()

    async def stubborn(ctx: WorkerContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    host = WorkerHost([Worker("stubborn", stubborn)])
    host.start()
    await asyncio.sleep(0.05)
    await host.stop(grace_s=0.1)
    assert cancelled.is_set()


def test_worker_names_are_unique() -> None:
    async def idle(ctx: WorkerContext) -> None:
        await ctx.wait_stopping()

    with pytest.raises(ValueError, match="unique"):
        WorkerHost([Worker("a", idle), Worker("a", idle)])


async def test_idle_returns_on_wake_on_shutdown_and_after_its_timeout() -> None:
    stop = asyncio.Event()
    ctx = WorkerContext("idle", stop)
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()

    started = loop.time()
    await ctx.idle(wake, 0.05)  # nothing happens: the timeout ends it
    assert loop.time() - started >= 0.04

    loop.call_later(0.05, wake.set)
    started = loop.time()
    await ctx.idle(wake, 30.0)  # new work wakes it long before the timeout
    assert loop.time() - started < 10.0

    wake.clear()
    loop.call_later(0.05, stop.set)
    started = loop.time()
    await ctx.idle(wake, 30.0)  # so does shutdown
    assert loop.time() - started < 10.0
    assert ctx.stopping
