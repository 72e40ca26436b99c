"""`service_handler` serves any service from its descriptor: the servicer's methods where
it has them, UNIMPLEMENTED naming the RPC elsewhere, in all four streaming shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection_pb2  # type: ignore[import-untyped]

from pushwarden.runtime.unimplemented import (
    call_with_empty_request,
    implemented_methods,
    service_handler,
    unimplemented_message,
)

HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"]  # unary Check, server-stream Watch
REFLECTION = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]  # bidi stream


class HalfHealth:
    """Implements Check only."""

    async def Check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        status = "SERVING" if request.service == "" else "SERVICE_UNKNOWN"
        return health_pb2.HealthCheckResponse(status=status)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            service_handler(HEALTH, HalfHealth()),
            service_handler(REFLECTION, object()),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as open_channel:
            yield open_channel
    finally:
        await server.stop(0)


def test_the_message_names_the_rpc() -> None:
    assert (
        unimplemented_message("pushwarden.consent.v1.ConsentService/RegisterDevice")
        == "pushwarden.consent.v1.ConsentService/RegisterDevice is not implemented yet"
    )


def test_implemented_methods_are_the_ones_the_servicer_defines() -> None:
    assert implemented_methods(HEALTH, HalfHealth()) == ("Check",)
    assert implemented_methods(REFLECTION, object()) == ()


async def test_a_defined_method_is_served_with_the_descriptor_s_messages(
    channel: grpc.aio.Channel,
) -> None:
    [reply] = await call_with_empty_request(channel, HEALTH.methods_by_name["Check"])
    assert isinstance(reply, health_pb2.HealthCheckResponse)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("service", "method", "message"),
    [
        (HEALTH, "Watch", "grpc.health.v1.Health/Watch is not implemented yet"),
        (
            REFLECTION,
            "ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo is not implemented yet",
        ),
    ],
)
async def test_a_missing_method_answers_unimplemented_naming_itself(
    channel: grpc.aio.Channel, service: Any, method: str, message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call_with_empty_request(channel, service.methods_by_name[method])
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert raised.value.details() == message
