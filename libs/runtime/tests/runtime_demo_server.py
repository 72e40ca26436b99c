"""A tiny service run through ``serve()`` as a real process, for the shutdown tests.

Prints ``port <n>`` once listening and ``in-flight`` when a Sleep RPC has started, on
stdout, so the test can synchronise on both without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import grpc

from pushwarden.runtime.server import RuntimeServer
from pushwarden.runtime.service import serve
from pushwarden.runtime.settings import ServerSettings, TelemetrySettings

SERVICE = "test.runtime.Demo"
SLEEP_S = 2.0


async def _sleep(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    print("in-flight", flush=True)
    await asyncio.sleep(SLEEP_S)
    return b"slept"


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE, {"Sleep": grpc.unary_unary_rpc_method_handler(_sleep)}
            ),
        )
    )


async def _announce(runtime: RuntimeServer) -> None:
    print(f"port {runtime.port}", flush=True)


def main() -> int:
    """Serve until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    return serve(
        service="demo",
        server=ServerSettings(host="127.0.0.1", port=0, grace_period_s=10.0),
        telemetry=TelemetrySettings(service_name="demo"),
        register=_register,
        service_names=[SERVICE],
        on_start=_announce,
    )


if __name__ == "__main__":
    raise SystemExit(main())
