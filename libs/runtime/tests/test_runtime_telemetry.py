"""A span per RPC, trace context continued from client to server, RPC metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pushwarden.runtime import errors
from pushwarden.runtime.auth import token_sha256
from pushwarden.runtime.client import open_channel
from pushwarden.runtime.server import RuntimeServer, create_server
from pushwarden.runtime.settings import CallerGrant, ServerSettings, TelemetrySettings
from pushwarden.runtime.telemetry import (
    Telemetry,
    context_from_headers,
    current_trace_headers,
    setup_telemetry,
)

SERVICE = "test.runtime.Traced"
TOKEN = "telemetry-test-token"


def _same(data: bytes) -> bytes:
    return data


def unary(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out unary callable (the test services have no protos)."""
    return ch.unary_unary(method, request_serializer=_same, response_deserializer=_same)


def stream(ch: grpc.aio.Channel, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A bytes-in, bytes-out server-streaming callable."""
    return ch.unary_stream(method, request_serializer=_same, response_deserializer=_same)


async def _ok(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return b"ok"


async def _missing(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise errors.NotFound("nothing here")


async def _broken(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("boom")


async def _count(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Ok": grpc.unary_unary_rpc_method_handler(_ok),
                    "Missing": grpc.unary_unary_rpc_method_handler(_missing),
                    "Broken": grpc.unary_unary_rpc_method_handler(_broken),
                    "Count": grpc.unary_stream_rpc_method_handler(_count),
                },
            ),
        )
    )


class Harness:
    """A telemetry-enabled server plus the exporter and reader that record it."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.telemetry: Telemetry = setup_telemetry(
            TelemetrySettings(service_name="test"),
            span_exporter=self.spans,
            metric_reader=self.metrics,
            install_global=False,
        )
        callers = (CallerGrant("tester", token_sha256(TOKEN), (f"/{SERVICE}/*",)),)
        self.server: RuntimeServer = create_server(
            ServerSettings(host="127.0.0.1", port=0, callers=callers),
            register=_register,
            service_names=[SERVICE],
            telemetry=self.telemetry,
        )

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is kind]

    async def settled(self, kind: SpanKind, count: int) -> list[ReadableSpan]:
        """The finished spans of ``kind`` once there are ``count`` of them.

        An aborted RPC's status reaches the client before the server's interceptor has
        finished its span, so the test waits for it (generous deadline, no fixed sleep).
        """
        for _ in range(1000):  # 10 s at most
            spans = self.finished(kind)
            if len(spans) >= count:
                break
            await asyncio.sleep(0.01)
        return spans


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    await h.server.start()
    yield h
    await h.server.stop(0)
    h.telemetry.shutdown()


def _channel(h: Harness, *, traced: bool = True, token: str | None = TOKEN) -> grpc.aio.Channel:
    return open_channel(
        f"127.0.0.1:{h.server.port}",
        token=token,
        telemetry=h.telemetry if traced else None,
    )


async def test_rpc_span_is_exported_with_rpc_attributes(harness: Harness) -> None:
    async with _channel(harness, traced=False) as ch:
        assert await unary(ch, f"/{SERVICE}/Ok")(b"") == b"ok"
    [span] = await harness.settled(SpanKind.SERVER, 1)
    assert span.name == f"/{SERVICE}/Ok"
    assert span.attributes is not None
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.service"] == SERVICE
    assert span.attributes["rpc.method"] == "Ok"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


@pytest.mark.parametrize(
    ("method", "code", "is_error"),
    [
        ("Missing", grpc.StatusCode.NOT_FOUND, False),
        ("Broken", grpc.StatusCode.INTERNAL, True),
    ],
)
async def test_span_records_the_final_status_code(
    harness: Harness, method: str, code: grpc.StatusCode, is_error: bool
) -> None:
    async with _channel(harness, traced=False) as ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(ch, f"/{SERVICE}/{method}")(b"")
    [span] = await harness.settled(SpanKind.SERVER, 1)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == code.value[0]
    assert (span.status.status_code is StatusCode.ERROR) is is_error


async def test_rejected_call_is_traced_as_unauthenticated(harness: Harness) -> None:
    async with _channel(harness, traced=False, token=None) as ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(ch, f"/{SERVICE}/Ok")(b"")
    [span] = await harness.settled(SpanKind.SERVER, 1)
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]


async def test_client_trace_continues_into_the_server(harness: Harness) -> None:
    async with _channel(harness) as ch:
        assert await unary(ch, f"/{SERVICE}/Ok")(b"") == b"ok"
        assert [x async for x in stream(ch, f"/{SERVICE}/Count")(b"")] == [b"0", b"1", b"2"]
    servers = await harness.settled(SpanKind.SERVER, 2)
    clients = await harness.settled(SpanKind.CLIENT, 2)
    assert len(servers) == 2
    assert len(clients) == 2
    for client in clients:
        [server] = [s for s in servers if s.name == client.name]
        assert client.context is not None
        assert server.context is not None
        assert server.context.trace_id == client.context.trace_id
        assert server.parent is not None
        assert server.parent.span_id == client.context.span_id
        assert server.parent.is_remote


async def test_traced_streaming_call_still_supports_read(harness: Harness) -> None:
    async with _channel(harness) as ch:
        call = stream(ch, f"/{SERVICE}/Count")(b"")
        assert [await call.read() for _ in range(3)] == [b"0", b"1", b"2"]
        assert await call.read() is grpc.aio.EOF
        assert await call.code() is grpc.StatusCode.OK
    [client] = await harness.settled(SpanKind.CLIENT, 1)
    assert client.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == 0


async def test_rpc_duration_histogram_counts_by_method_and_code(harness: Harness) -> None:
    async with _channel(harness, traced=False) as ch:
        for _ in range(3):
            await unary(ch, f"/{SERVICE}/Ok")(b"")
        with pytest.raises(grpc.aio.AioRpcError):
            await unary(ch, f"/{SERVICE}/Missing")(b"")
    # The interceptor records the histogram entry before it ends the span, so four
    # finished server spans mean four measured RPCs.
    await harness.settled(SpanKind.SERVER, 4)
    data = harness.metrics.get_metrics_data()
    assert data is not None
    points: dict[str, dict[tuple[str, int], Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = point.attributes or {}
                    key = (str(attrs["rpc.method"]), int(attrs["rpc.grpc.status_code"]))  # type: ignore[arg-type]
                    points.setdefault(metric.name, {})[key] = point
    ok = ("Ok", grpc.StatusCode.OK.value[0])
    missing = ("Missing", grpc.StatusCode.NOT_FOUND.value[0])
    assert points["rpc.server.duration"][ok].count == 3
    assert points["rpc.server.duration"][missing].count == 1
    assert points["rpc.server.duration"][ok].sum > 0


def test_exporter_none_disables_telemetry() -> None:
    telemetry = setup_telemetry(TelemetrySettings(service_name="quiet"), install_global=False)
    assert not telemetry.enabled
    assert telemetry.server_interceptor() is None
    assert telemetry.client_interceptors() == []


def test_trace_headers_carry_the_context_through_queued_work() -> None:
    spans = InMemorySpanExporter()
    telemetry = setup_telemetry(
        TelemetrySettings(service_name="queue"), span_exporter=spans, install_global=False
    )
    assert telemetry.tracer_provider is not None
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("enqueue") as producer:
        headers = current_trace_headers()
    assert set(headers) == {"traceparent"}
    with tracer.start_as_current_span("work", context=context_from_headers(headers)):
        pass
    work = next(s for s in spans.get_finished_spans() if s.name == "work")
    assert work.parent is not None
    assert work.parent.span_id == producer.get_span_context().span_id
    telemetry.shutdown()


def test_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = setup_telemetry(
        TelemetrySettings(service_name="console-test", exporter="console"), install_global=False
    )
    assert telemetry.enabled
    assert telemetry.server_interceptor() is not None
    assert telemetry.tracer_provider is not None
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("printed-span"):
        pass
    telemetry.shutdown()
    out = capsys.readouterr().out
    assert "printed-span" in out
    assert "console-test" in out
