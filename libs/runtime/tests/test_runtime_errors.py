"""Domain errors become gRPC statuses with google.rpc details; surprises become INTERNAL
with an error id that the log line carries too."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

from pushwarden.runtime import errors
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import ServerSettings

SERVICE = "test.runtime.Errors"

RAISERS: dict[str, Callable[[], Exception]] = {
    "invalid": lambda: errors.InvalidArgument(
        "bad request", [("app_id", "must not be empty"), ("user_ids[3]", "too long")]
    ),
    "not_found": lambda: errors.NotFound(
        "no such campaign", resource_type="campaign", resource_name="c-1"
    ),
    "precondition": lambda: errors.FailedPrecondition(
        "campaign is not running", [("STATE", "campaigns/c-1", "campaign is PAUSED")]
    ),
    "exhausted": lambda: errors.ResourceExhausted(
        "rate limited",
        [("app:a1", "100 calls per second")],
        retry_after_s=1.5,
        reason="RATE_LIMITED",
        metadata={"app_id": "a1"},
    ),
    "unavailable": lambda: errors.Unavailable("consent is down", retry_after_s=0.25),
    "bug": lambda: KeyError("secret-user-42"),
}


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


def stream(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out server-streaming callable."""
    return ch.unary_stream(method, request_serializer=_same, response_deserializer=_same)


async def _unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RAISERS[request.decode()]()


async def _stream(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"first"
    raise RAISERS[request.decode()]()


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    async for request in requests:
        if request != b"ok":
            raise RAISERS[request.decode()]()
        yield request


async def _aborts(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.OUT_OF_RANGE, "handler chose this")


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(_unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(_stream),
                    "Aborts": grpc.unary_unary_rpc_method_handler(_aborts),
                    "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
                },
            ),
        )
    )


@pytest.fixture
async def server() -> AsyncIterator[RuntimeServer]:
    runtime = create_server(
        ServerSettings(host="127.0.0.1", port=0), register=_register, service_names=[SERVICE]
    )
    await runtime.start()
    yield runtime
    await runtime.stop(0)


@pytest.fixture
async def channel(server: RuntimeServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


async def _failed_unary(channel: grpc.aio.Channel, case: str) -> tuple[Any, Any]:
    call = unary(channel, f"/{SERVICE}/Unary")(case.encode(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    return call, await rpc_status.aio.from_call(call)


def _details(status: status_pb2.Status, kind: type[Any]) -> list[Any]:
    found = []
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


async def test_invalid_argument_carries_field_violations(channel: grpc.aio.Channel) -> None:
    call, status = await _failed_unary(channel, "invalid")
    assert await call.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert status.message == "bad request"
    [bad_request] = _details(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("app_id", "must not be empty"),
        ("user_ids[3]", "too long"),
    ]


async def test_not_found_names_the_resource(channel: grpc.aio.Channel) -> None:
    call, status = await _failed_unary(channel, "not_found")
    assert await call.code() is grpc.StatusCode.NOT_FOUND
    [info] = _details(status, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("campaign", "c-1")


async def test_failed_precondition_carries_precondition_failure(
    channel: grpc.aio.Channel,
) -> None:
    call, status = await _failed_unary(channel, "precondition")
    assert await call.code() is grpc.StatusCode.FAILED_PRECONDITION
    [failure] = _details(status, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.subject, v.description) for v in failure.violations] == [
        ("STATE", "campaigns/c-1", "campaign is PAUSED")
    ]


async def test_resource_exhausted_carries_quota_retry_and_error_info(
    channel: grpc.aio.Channel,
) -> None:
    call, status = await _failed_unary(channel, "exhausted")
    assert await call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    [quota] = _details(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "app:a1"
    [retry] = _details(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() == pytest.approx(1.5)
    [info] = _details(status, error_details_pb2.ErrorInfo)
    assert info.reason == "RATE_LIMITED"
    assert dict(info.metadata) == {"app_id": "a1"}


async def test_unavailable_carries_retry_info(channel: grpc.aio.Channel) -> None:
    call, status = await _failed_unary(channel, "unavailable")
    assert await call.code() is grpc.StatusCode.UNAVAILABLE
    [retry] = _details(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToTimedelta().total_seconds() == pytest.approx(0.25)


async def test_unexpected_exception_is_internal_with_logged_error_id(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pushwarden.runtime.errors")
    call, status = await _failed_unary(channel, "bug")
    assert await call.code() is grpc.StatusCode.INTERNAL
    details = await call.details()
    match = re.search(r"error id ([0-9a-f]{32})", details)
    assert match, details
    assert "secret-user-42" not in details
    [info] = _details(status, error_details_pb2.ErrorInfo)
    assert info.metadata["error_id"] == match.group(1)
    [record] = [r for r in caplog.records if getattr(r, "error_id", None) == match.group(1)]
    assert record.method == f"/{SERVICE}/Unary"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


@pytest.mark.parametrize(
    ("case", "code"),
    [("invalid", grpc.StatusCode.INVALID_ARGUMENT), ("bug", grpc.StatusCode.INTERNAL)],
)
async def test_server_streaming_errors_are_mapped_after_partial_output(
    channel: grpc.aio.Channel, case: str, code: grpc.StatusCode
) -> None:
    call = stream(channel, f"/{SERVICE}/Stream")(case.encode(), timeout=10)
    received: list[bytes] = []

    async def drain() -> None:
        async for item in call:
            received.append(item)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()
    assert received == [b"first"]
    assert caught.value.code() is code
    assert caught.value.details()
    status = await rpc_status.aio.from_call(call)
    assert status is not None
    assert status.code == code.value[0]


async def test_bidi_streaming_errors_are_mapped(channel: grpc.aio.Channel) -> None:
    call = channel.stream_stream(
        f"/{SERVICE}/Bidi", request_serializer=_same, response_deserializer=_same
    )(iter([b"ok", b"invalid", b"ok"]), timeout=10)
    received: list[bytes] = []

    async def drain() -> None:
        async for item in call:
            received.append(item)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain()
    assert received == [b"ok"]
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = await rpc_status.aio.from_call(call)
    [bad_request] = _details(status, error_details_pb2.BadRequest)
    assert bad_request.field_violations[0].field == "app_id"


async def test_a_handlers_own_abort_passes_through(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await unary(channel, f"/{SERVICE}/Aborts")(b"", timeout=10)
    assert caught.value.code() is grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details() == "handler chose this"


def test_every_domain_error_has_a_non_empty_message() -> None:
    for kind in (errors.NotFound, errors.PermissionDenied, errors.Aborted, errors.Unimplemented):
        status = kind("").to_status()
        assert status.message
        assert status.code != grpc.StatusCode.INTERNAL.value[0]
