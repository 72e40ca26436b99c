"""Bearer tokens with per-method allow lists; health and reflection stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from grpc_status import rpc_status  # type: ignore[import-untyped]

from pushwarden.runtime.auth import (
    bearer_token,
    current_caller,
    method_allowed,
    require_app,
    token_sha256,
)
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import CallerGrant, ServerSettings

ORDERS = "test.runtime.Orders"
BILLING = "test.runtime.Billing"

SCHEDULER_TOKEN = "scheduler-secret-token"
DELIVERY_TOKEN = "delivery-secret-token"
ADMIN_TOKEN = "admin-secret-token"
SHOP_TOKEN = "shop-only-secret-token"

CALLERS = (
    CallerGrant("scheduler", token_sha256(SCHEDULER_TOKEN), (f"/{ORDERS}/*",)),
    CallerGrant("delivery", token_sha256(DELIVERY_TOKEN), (f"/{ORDERS}/Get",)),
    CallerGrant("admin", token_sha256(ADMIN_TOKEN), ("*",)),
    CallerGrant("shop-backend", token_sha256(SHOP_TOKEN), ("*",), apps=("shop",)),
)


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


def stream(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out server-streaming callable."""
    return ch.unary_stream(method, request_serializer=_same, response_deserializer=_same)


async def _whoami(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return (current_caller.get() or "-").encode()


async def _whoami_stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield (current_caller.get() or "-").encode()


async def _scoped(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Touches the data of the app named by the request, as servicers will."""
    require_app(request.decode())
    return b"ok"


def _register(server: grpc.aio.Server) -> None:
    for service in (ORDERS, BILLING):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Get": grpc.unary_unary_rpc_method_handler(_whoami),
                        "Create": grpc.unary_unary_rpc_method_handler(_whoami),
                        "Watch": grpc.unary_stream_rpc_method_handler(_whoami_stream),
                        "Scoped": grpc.unary_unary_rpc_method_handler(_scoped),
                    },
                ),
            )
        )


async def _start(callers: tuple[CallerGrant, ...]) -> RuntimeServer:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0, callers=callers),
        register=_register,
        service_names=[ORDERS, BILLING],
    )
    await runtime.start()
    return runtime


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    runtime = await _start(CALLERS)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
        yield ch
    await runtime.stop(0)


def _auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _call(channel: grpc.aio.Channel, method: str, token: str | None = None) -> bytes:
    metadata = _auth(token) if token else None
    response: bytes = await unary(channel, method)(b"", timeout=10, metadata=metadata)
    return response


async def test_no_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{ORDERS}/Get")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_token_is_unauthenticated(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{ORDERS}/Get", "not-a-known-token")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_method_without_token_is_unauthenticated(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{ORDERS}/NoSuchMethod")
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{ORDERS}/NoSuchMethod", ADMIN_TOKEN)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_known_token_without_the_method_is_permission_denied(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{ORDERS}/Create", DELIVERY_TOKEN)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    details = caught.value.details() or ""
    assert f"/{ORDERS}/Create" in details
    assert "delivery" in details
    assert DELIVERY_TOKEN not in details


async def test_streaming_method_is_guarded_too(channel: grpc.aio.Channel) -> None:
    call = stream(channel, f"/{ORDERS}/Watch")(b"", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [item async for item in call]
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    allowed = stream(channel, f"/{ORDERS}/Watch")(b"", timeout=10, metadata=_auth(SCHEDULER_TOKEN))
    assert [item async for item in allowed] == [b"scheduler"]


@pytest.mark.parametrize(
    ("token", "method", "caller"),
    [
        (DELIVERY_TOKEN, f"/{ORDERS}/Get", "delivery"),
        (SCHEDULER_TOKEN, f"/{ORDERS}/Create", "scheduler"),
        (ADMIN_TOKEN, f"/{BILLING}/Create", "admin"),
    ],
)
async def test_allowed_call_reaches_the_handler_with_the_caller_name(
    channel: grpc.aio.Channel, token: str, method: str, caller: str
) -> None:
    assert await _call(channel, method, token) == caller.encode()


async def test_service_wildcard_does_not_reach_other_services(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(channel, f"/{BILLING}/Get", SCHEDULER_TOKEN)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_stay_open_without_a_token(
    channel: grpc.aio.Channel,
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    response = await health.Check(health_pb2.HealthCheckRequest(service=ORDERS), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one_request() -> AsyncIterator[Any]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for answer in reflection.ServerReflectionInfo(one_request(), timeout=10):
        names |= {s.name for s in answer.list_services_response.service}
    assert {ORDERS, BILLING, "grpc.health.v1.Health"} <= names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


async def test_auth_is_off_without_callers() -> None:
    runtime = await _start(())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as ch:
            assert await _call(ch, f"/{BILLING}/Create") == b"-"
    finally:
        await runtime.stop(0)


def test_method_patterns() -> None:
    method = "/pushwarden.consent.v1.ConsentService/CheckEligibility"
    assert method_allowed(["*"], method)
    assert method_allowed([method], method)
    assert method_allowed(["/pushwarden.consent.v1.ConsentService/*"], method)
    assert not method_allowed(["/pushwarden.consent.v1.Consent/*"], method)
    assert not method_allowed(["/pushwarden.consent.v1.ConsentService/Check"], method)
    assert not method_allowed([], method)


def test_bearer_token_parsing() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token((("authorization", "Bearer "),)) is None
    assert bearer_token(None) is None


async def _scoped_call(channel: grpc.aio.Channel, app_id: str, token: str) -> bytes:
    response: bytes = await unary(channel, f"/{ORDERS}/Scoped")(
        app_id.encode(), timeout=10, metadata=_auth(token)
    )
    return response


async def test_a_grant_limited_to_one_app_reaches_that_app_only(
    channel: grpc.aio.Channel,
) -> None:
    assert await _scoped_call(channel, "shop", SHOP_TOKEN) == b"ok"
    for other in ("travel", ""):  # "" is every app: the follower streams
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _scoped_call(channel, other, SHOP_TOKEN)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        status = rpc_status.from_call(raised.value)
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert info.reason == "APP_NOT_ALLOWED"
        assert info.metadata["caller"] == "shop-backend"


async def test_a_grant_without_apps_covers_every_app(channel: grpc.aio.Channel) -> None:
    for app_id in ("shop", "travel", ""):
        assert await _scoped_call(channel, app_id, ADMIN_TOKEN) == b"ok"


def test_require_app_allows_everything_when_auth_is_off() -> None:
    require_app("any-app")
    require_app("")
