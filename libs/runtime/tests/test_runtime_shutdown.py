"""Graceful shutdown of a real service process: NOT_SERVING first, in-flight RPCs
finish, new ones are refused, exit 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

DEMO = Path(__file__).with_name("runtime_demo_server.py")
SLEEP = "/test.runtime.Demo/Sleep"
DEADLINE_S = 30.0


def _same(data: bytes) -> bytes:
    return data


class DemoProcess:
    """The demo server as a child process with line-wise access to its stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def expect(self, prefix: str) -> str:
        """Read stdout lines until one starts with ``prefix``."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), DEADLINE_S)
            if not line:
                raise AssertionError(f"demo server ended before printing {prefix!r}")
            text = line.decode().strip()
            if text.startswith(prefix):
                return text


@pytest.fixture
async def demo() -> AsyncIterator[DemoProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DEMO), stdout=asyncio.subprocess.PIPE
    )
    yield DemoProcess(process)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def _next_status(watch: grpc.aio.UnaryStreamCall[Any, Any]) -> int:
    response = await asyncio.wait_for(watch.read(), DEADLINE_S)
    assert isinstance(response, health_pb2.HealthCheckResponse)
    return int(response.status)


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """Poll with new RPCs until the server refuses one; return the refusal's code."""
    health = health_pb2_grpc.HealthStub(channel)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + DEADLINE_S
    while loop.time() < give_up:
        try:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError as error:
            return error.code()
        await asyncio.sleep(0.02)
    raise AssertionError("the server kept accepting new RPCs after the signal")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_in_flight_rpc_and_exits_zero(
    demo: DemoProcess, sig: signal.Signals
) -> None:
    port = int((await demo.expect("port ")).split()[1])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="test.runtime.Demo"))
        assert await _next_status(watch) == health_pb2.HealthCheckResponse.SERVING

        sleep = channel.unary_unary(SLEEP, request_serializer=_same, response_deserializer=_same)
        in_flight = asyncio.ensure_future(sleep(b"", timeout=DEADLINE_S))
        await demo.expect("in-flight")
        demo.process.send_signal(sig)

        # Health turns NOT_SERVING first, while the sleeping RPC is still running.
        assert await _next_status(watch) == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        assert not in_flight.done()

        # New RPCs are refused from then on, and the in-flight one still completes.
        assert await _refused(channel) is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sleep(b"", timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await in_flight == b"slept"

    assert await asyncio.wait_for(demo.process.wait(), DEADLINE_S) == 0


@pytest.mark.slow
async def test_idle_server_stops_promptly(demo: DemoProcess) -> None:
    await demo.expect("port ")
    loop = asyncio.get_running_loop()
    started = loop.time()
    demo.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(demo.process.wait(), DEADLINE_S) == 0
    # No RPC is in flight, so the 10 s grace period must not be waited out.
    assert loop.time() - started < 8.0
