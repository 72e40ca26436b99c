"""A tiny ServiceApp with one worker and one slow RPC, run as a real process by the
worker lifecycle tests.

stdout protocol: ``port <n>`` when the worker first runs (so the server serves by then),
``in-flight`` when a Sleep RPC has started, ``worker stopped in_flight=<n>`` when the
worker sees shutdown (with how many RPCs were still running at that moment). Before the
port, ``peer <status>``: how a call on a client channel that bootstrap opened (to a
closed port) ended, as a service's channels to its peers are opened in bootstrap.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import grpc

from pushwarden.runtime.app import ServiceApp, run_main
from pushwarden.runtime.config import ServiceConfig, port_setting
from pushwarden.runtime.db import Database, create_async_engine_for
from pushwarden.runtime.workers import Worker, WorkerContext

SERVICE = "test.runtime.Demo"
SLEEP_S = 2.0


@dataclass(frozen=True, kw_only=True)
class DemoConfig(ServiceConfig):
    """The demo's settings (PUSHWARDEN_WDEMO_*)."""

    SERVICE: ClassVar[str] = "wdemo"
    port: int = port_setting(0)


def bootstrap(config: DemoConfig) -> ServiceApp[DemoConfig]:
    """One worker, one slow RPC."""
    in_flight = 0

    async def sleep(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        nonlocal in_flight
        in_flight += 1
        print("in-flight", flush=True)
        try:
            await asyncio.sleep(SLEEP_S)
        finally:
            in_flight -= 1
        return b"slept"

    async def ticker(ctx: WorkerContext) -> None:
        assert app.runtime is not None
        try:
            ping: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = peer.unary_unary(
                "/test.runtime.Peer/Ping"
            )
            await ping(b"", timeout=2)
            print("peer OK", flush=True)
        except grpc.aio.AioRpcError as error:
            print(f"peer {error.code().name}", flush=True)
        except RuntimeError as error:  # a channel bound to another event loop
            print(f"peer RuntimeError {error}", flush=True)
        print(f"port {app.runtime.port}", flush=True)
        await ctx.wait_stopping()
        print(f"worker stopped in_flight={in_flight}", flush=True)

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}
    )
    peer = grpc.aio.insecure_channel("127.0.0.1:9")
    database = Database(create_async_engine_for(config.database_settings()))
    app = ServiceApp(
        config,
        database,
        handlers=(handler,),
        service_names=(SERVICE,),
        workers=(Worker("ticker", ticker),),
    )
    return app


if __name__ == "__main__":
    sys.exit(run_main(DemoConfig, "wdemo", bootstrap))
