"""The server factory: port 0, health per service, reflection, message size limits,
and the interceptor order."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pushwarden.runtime.auth import AuthInterceptor
from pushwarden.runtime.config import ConfigError
from pushwarden.runtime.errors import ErrorInterceptor
from pushwarden.runtime.server import (
    BindError,
    RuntimeServer,
    build_interceptors,
    create_server,
)
from pushwarden.runtime.settings import (
    CallerGrant,
    ServerEnvNames,
    ServerSettings,
    TelemetrySettings,
)
from pushwarden.runtime.telemetry import ServerTelemetryInterceptor, setup_telemetry

ALPHA = "test.runtime.Alpha"
BETA = "test.runtime.Beta"
LIMIT = 4096


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


async def _echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _grow(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"x" * int(request)


def _register(server: grpc.aio.Server) -> None:
    for service in (ALPHA, BETA):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
                        "Grow": grpc.unary_unary_rpc_method_handler(_grow),
                    },
                ),
            )
        )


@pytest.fixture
async def server() -> AsyncIterator[RuntimeServer]:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0, max_message_bytes=LIMIT),
        register=_register,
        service_names=[ALPHA, BETA],
    )
    await runtime.start()
    yield runtime
    await runtime.stop(0)


@pytest.fixture
async def channel(server: RuntimeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def test_port_zero_binds_a_real_port(
    server: RuntimeServer, channel: grpc.aio.Channel
) -> None:
    assert server.port > 0
    assert await unary(channel, f"/{ALPHA}/Echo")(b"hi", timeout=10) == b"hi"


def test_a_taken_port_is_a_clear_error(server: RuntimeServer) -> None:
    settings = ServerSettings(host="127.0.0.1", port=server.port)
    with pytest.raises(BindError, match=f"127.0.0.1:{server.port}"):
        create_server(settings, register=_register, service_names=[ALPHA])


def test_a_taken_port_is_a_config_error_naming_the_port_setting(server: RuntimeServer) -> None:
    names = ServerEnvNames(port="PUSHWARDEN_CONSENT_PORT", host="PUSHWARDEN_CONSENT_HOST")
    settings = ServerSettings(host="127.0.0.1", port=server.port, env_names=names)
    with pytest.raises(ConfigError) as caught:
        create_server(settings, register=_register, service_names=[ALPHA])
    assert str(caught.value) == (
        f"PUSHWARDEN_CONSENT_PORT: cannot listen on 127.0.0.1:{server.port}: address in use"
    )


async def test_an_address_of_another_host_is_a_config_error_naming_the_host_setting() -> None:
    # 192.0.2.0/24 is reserved for documentation: never an address of this machine.
    names = ServerEnvNames(port="PUSHWARDEN_CONSENT_PORT", host="PUSHWARDEN_CONSENT_HOST")
    settings = ServerSettings(host="192.0.2.1", port=0, env_names=names)
    with pytest.raises(
        ConfigError, match=r"^PUSHWARDEN_CONSENT_HOST: cannot listen on 192\.0\.2\.1:0: "
    ):
        create_server(settings, register=_register, service_names=[ALPHA])


@pytest.mark.parametrize("service", ["", ALPHA, BETA])
async def test_health_reports_each_service_serving(channel: grpc.aio.Channel, service: str) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_of_an_unknown_service_is_not_found(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_health_list_answers_every_service(channel: grpc.aio.Channel) -> None:
    # The library's asyncio servicer left List to the generated base: INTERNAL.
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.List(health_pb2.HealthListRequest(), timeout=10)
    assert {name: s.status for name, s in response.statuses.items()} == {
        "": health_pb2.HealthCheckResponse.SERVING,
        ALPHA: health_pb2.HealthCheckResponse.SERVING,
        BETA: health_pb2.HealthCheckResponse.SERVING,
    }


async def test_health_list_is_not_serving_once_stopping() -> None:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0), register=_register, service_names=[ALPHA]
    )
    await runtime.start()
    await runtime.stop(0)
    await runtime.health.set(ALPHA, health_pb2.HealthCheckResponse.SERVING)  # ignored now
    response = await runtime.health.List(health_pb2.HealthListRequest(), context=None)
    assert {name: s.status for name, s in response.statuses.items()} == {
        "": health_pb2.HealthCheckResponse.NOT_SERVING,
        ALPHA: health_pb2.HealthCheckResponse.NOT_SERVING,
    }


async def test_health_is_not_serving_once_stopping() -> None:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0), register=_register, service_names=[ALPHA]
    )
    await runtime.start()
    await runtime.stop(0)
    for name in ("", ALPHA):
        response = await runtime.health.Check(
            health_pb2.HealthCheckRequest(service=name), context=None
        )
        assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_services_health_and_reflection(
    channel: grpc.aio.Channel,
) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names: set[str] = set()
    async for answer in stub.ServerReflectionInfo(ask(), timeout=10):
        names |= {s.name for s in answer.list_services_response.service}
    assert names == {
        ALPHA,
        BETA,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_request_over_the_limit_is_rejected(channel: grpc.aio.Channel) -> None:
    assert await unary(channel, f"/{ALPHA}/Echo")(b"x" * (LIMIT - 64), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, f"/{ALPHA}/Echo")(b"x" * (LIMIT + 1), timeout=10)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_response_over_the_limit_is_not_sent(channel: grpc.aio.Channel) -> None:
    assert len(await unary(channel, f"/{ALPHA}/Grow")(str(LIMIT - 64).encode(), timeout=10))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, f"/{ALPHA}/Grow")(str(LIMIT + 1).encode(), timeout=10)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_interceptor_chain_order() -> None:
    telemetry = setup_telemetry(
        TelemetrySettings(service_name="order"),
        span_exporter=InMemorySpanExporter(),
        install_global=False,
    )
    settings = ServerSettings(callers=(CallerGrant("c", "0" * 64, ("*",)),))
    chain = build_interceptors(settings, telemetry)
    assert [type(i) for i in chain] == [
        ServerTelemetryInterceptor,
        AuthInterceptor,
        ErrorInterceptor,
    ]
    # Auth off and telemetry off leave only the error mapping.
    assert [type(i) for i in build_interceptors(ServerSettings())] == [ErrorInterceptor]
    telemetry.shutdown()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_an_ipv6_address_binds(host: str) -> None:
    runtime = create_server(
        ServerSettings(host=host, port=0), register=_register, service_names=[ALPHA]
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{runtime.port}") as ch:
            assert await unary(ch, f"/{ALPHA}/Echo")(b"six", timeout=10) == b"six"
    finally:
        await runtime.stop(0)
