"""OpenTelemetry for a service process: providers, and gRPC server/client interceptors.

:func:`setup_telemetry` is called once per process by the composition root. With the
exporter ``none`` (the default) and nothing injected, telemetry is disabled: no
provider is installed and the interceptors are left out of the chain entirely, so a
service that does not export pays nothing. Tests inject an in-memory span exporter
and metric reader.

The interceptors are written here rather than taken from
opentelemetry-instrumentation-grpc: a SERVER span per RPC named after the full method,
continued from the caller's W3C ``traceparent``; an RPC duration histogram by method and
status code (its count is the call count); and a CLIENT span per outgoing call whose context
travels in the request metadata.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry import metrics, trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pushwarden.runtime._wrap import (
    WrappingInterceptor,
    client_interceptors,
    iterate_response,
    rewrap,
)
from pushwarden.runtime.settings import TelemetrySettings

logger = logging.getLogger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
_INSTRUMENTATION = "pushwarden.runtime"

# Server spans are errors only for codes that point at the server (OTel RPC semconv);
# a client's bad argument or missing permission is not the server's failure.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_installed_globally = False


@dataclass(slots=True)
class Telemetry:
    """The process's telemetry: providers (None when disabled) and the interceptors
    built on them."""

    service_name: str
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything records spans or metrics."""
        return self.tracer_provider is not None

    def server_interceptor(self) -> grpc.aio.ServerInterceptor | None:
        """The server interceptor, or None when telemetry is disabled."""
        if self.tracer_provider is None or self.meter_provider is None:
            return None
        return ServerTelemetryInterceptor(
            self.tracer_provider.get_tracer(_INSTRUMENTATION),
            self.meter_provider.get_meter(_INSTRUMENTATION),
        )

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer of the process's provider (a no-op one when telemetry is disabled, so
        code that makes spans of its own needs no check)."""
        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer(name)

    def client_interceptors(self) -> list[grpc.aio.ClientInterceptor]:
        """The client interceptors (empty when telemetry is disabled)."""
        if self.tracer_provider is None:
            return []
        return client_interceptors(ClientTracing(self.tracer_provider.get_tracer(_INSTRUMENTATION)))

    def shutdown(self) -> None:
        """Flush and stop the providers (exporters send what they hold)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _exporters(
    settings: TelemetrySettings,
) -> tuple[SpanExporter | None, MetricReader | None]:
    if settings.exporter == "console":
        # The exporters' default stream is bound when OpenTelemetry is imported; pass
        # the current one so that a redirected stdout is honoured.
        return (
            ConsoleSpanExporter(out=sys.stdout),
            PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout)),
        )
    if settings.exporter == "otlp":
        # Imported lazily: the OTLP exporter pulls in protobuf modules a service
        # without export never needs.
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        return (
            OTLPSpanExporter(endpoint=endpoint),
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint)),
        )
    return None, None


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    install_global: bool = True,
) -> Telemetry:
    """Build the process's tracer and meter providers from ``settings``.

    ``span_exporter`` / ``metric_reader`` (tests) replace the configured exporters.
    With ``install_global`` the providers become the OpenTelemetry globals, which the
    API allows only once per process: later calls keep their providers local.
    """
    global _installed_globally
    injected_both = span_exporter is not None and metric_reader is not None
    configured_spans, configured_metrics = (None, None) if injected_both else _exporters(settings)
    spans = span_exporter or configured_spans
    reader = metric_reader or configured_metrics
    if spans is None and reader is None:
        return Telemetry(settings.service_name)
    resource = Resource.create({"service.name": settings.service_name})
    tracer_provider = TracerProvider(resource=resource)
    if spans is not None:
        # Injected exporters (tests) must see spans at once; real ones batch.
        processor = (
            SimpleSpanProcessor(spans)
            if span_exporter is not None or settings.exporter == "console"
            else BatchSpanProcessor(spans)
        )
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[reader] if reader is not None else []
    )
    if install_global and not _installed_globally:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _installed_globally = True
    logger.info(
        "telemetry enabled",
        extra={"exporter": settings.exporter, "otlp_endpoint": settings.otlp_endpoint},
    )
    return Telemetry(settings.service_name, tracer_provider, meter_provider)


class _MetadataGetter(Getter[Any]):
    """Reads W3C headers from gRPC invocation metadata (a sequence of pairs)."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        values = [v for k, v in carrier or () if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        return [k for k, _ in carrier or ()]


class _MetadataSetter(Setter[grpc.aio.Metadata]):
    """Writes W3C headers into outgoing gRPC metadata."""

    def set(self, carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _MetadataGetter()
_SETTER = _MetadataSetter()


def _split_method(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class ServerTelemetryInterceptor(WrappingInterceptor):
    """A SERVER span and a duration histogram entry (by method and code) per RPC."""

    def __init__(self, tracer: trace.Tracer, meter: metrics.Meter) -> None:
        super().__init__()
        self._tracer = tracer
        self._duration = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="Duration of inbound RPCs"
        )
        self._metric_attributes: dict[tuple[str, grpc.StatusCode], dict[str, Any]] = {}

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Run each call of ``handler`` inside a SERVER span and time it."""
        service, name = _split_method(method)
        span_attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        start_span = self._start_span
        finish = self._finish

        def wrap_unary(behavior: Callable[..., Any]) -> Any:
            async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                span, started = start_span(method, span_attributes, context)
                code = grpc.StatusCode.UNKNOWN
                try:
                    with trace.use_span(
                        span,
                        end_on_exit=False,
                        record_exception=False,
                        set_status_on_exception=False,
                    ):
                        response = await behavior(request, context)
                    code = grpc.StatusCode.OK
                    return response
                except BaseException as exc:
                    code = _code_of(exc, context)
                    raise
                finally:
                    finish(span, started, method, code)

            return traced

        def wrap_stream(behavior: Callable[..., Any]) -> Any:
            async def traced(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                span, started = start_span(method, span_attributes, context)
                code = grpc.StatusCode.UNKNOWN
                try:
                    with trace.use_span(
                        span,
                        end_on_exit=False,
                        record_exception=False,
                        set_status_on_exception=False,
                    ):
                        async for item in iterate_response(behavior(request, context)):
                            yield item
                    code = grpc.StatusCode.OK
                except BaseException as exc:
                    code = _code_of(exc, context)
                    raise
                finally:
                    finish(span, started, method, code)

            return traced

        return rewrap(handler, wrap_unary, wrap_stream)

    def _start_span(
        self,
        method: str,
        attributes: dict[str, str],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> tuple[trace.Span, float]:
        parent: OtelContext = _PROPAGATOR.extract(context.invocation_metadata(), getter=_GETTER)
        span = self._tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return span, time.perf_counter()

    def _finish(self, span: trace.Span, started: float, method: str, code: grpc.StatusCode) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        key = (method, code)
        attributes = self._metric_attributes.get(key)
        if attributes is None:
            service, name = _split_method(method)
            attributes = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "rpc.grpc.status_code": code.value[0],
            }
            self._metric_attributes[key] = attributes
        # The histogram's count per attribute set is the call count by method and code,
        # so no separate counter is kept (it would double the per-call metric work).
        self._duration.record(elapsed_ms, attributes)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


def _code_of(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status an RPC ends with when its handler raised ``exc``."""
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        # aio keeps the aborted code on the context; the stub may report it as a plain int.
        if isinstance(code, grpc.StatusCode):
            return code
        return _CODES_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)  # type: ignore[unreachable]
    return grpc.StatusCode.UNKNOWN


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _with_trace_headers(
    details: grpc.aio.ClientCallDetails, span_context: OtelContext
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    _PROPAGATOR.inject(metadata, context=span_context, setter=_SETTER)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def _method_name(details: grpc.aio.ClientCallDetails) -> str:
    method: str | bytes = details.method
    return method.decode() if isinstance(method, bytes) else method


class ClientTracing:
    """A CLIENT span per outgoing call, its context injected as W3C ``traceparent``
    (a :class:`~pushwarden.runtime._wrap.ClientHook`)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def _start(
        self, details: grpc.aio.ClientCallDetails
    ) -> tuple[trace.Span, grpc.aio.ClientCallDetails]:
        method = _method_name(details)
        service, name = _split_method(method)
        span = self._tracer.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )
        return span, _with_trace_headers(details, trace.set_span_in_context(span))

    async def unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Trace a call with one response: the span ends with the call's status."""
        span, traced_details = self._start(details)
        code = grpc.StatusCode.UNKNOWN
        try:
            call = await continuation(traced_details, request)
            code = await call.code()
            return call
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            _end_client_span(span, code)

    async def stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        """Trace a call with streamed responses: the span ends with the stream."""
        span, traced_details = self._start(details)
        call = await continuation(traced_details, request)
        # Returning an iterator (not the call) lets the span end exactly when the
        # caller has read the last response or the error, before its loop exits.
        return _traced_responses(call, span)


async def _traced_responses(call: Any, span: trace.Span) -> AsyncIterator[Any]:
    code = grpc.StatusCode.OK
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as error:
        code = error.code()
        raise
    except (asyncio.CancelledError, GeneratorExit):
        code = grpc.StatusCode.CANCELLED
        raise
    finally:
        _end_client_span(span, code)


def _end_client_span(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


def current_trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers, to store with queued work so that the
    worker that picks it up later continues the same trace."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers)
    return headers


def context_from_headers(headers: Mapping[str, str]) -> OtelContext:
    """The OpenTelemetry context stored by :func:`current_trace_headers` (pass it as
    ``context=`` when starting the worker's span)."""
    return _PROPAGATOR.extract(dict(headers))


def stored_trace_headers(traceparent: str, tracestate: str = "") -> dict[str, str]:
    """The W3C headers of a stored ``traceparent`` / ``tracestate`` pair (empty when
    nothing was stored)."""
    if not traceparent:
        return {}
    headers = {"traceparent": traceparent}
    if tracestate:
        headers["tracestate"] = tracestate
    return headers


def span_context_of(headers: Mapping[str, str]) -> trace.SpanContext | None:
    """The span context that W3C ``headers`` name, or None when they name none (empty or
    malformed)."""
    if not headers:
        return None
    span_context = trace.get_current_span(context_from_headers(headers)).get_span_context()
    return span_context if span_context.is_valid else None


def span_trace_headers(span: trace.Span) -> dict[str, str]:
    """``span``'s context as W3C headers (empty for a span that records nothing and has
    no valid context, as with telemetry disabled)."""
    headers: dict[str, str] = {}
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
    return headers


def nearest_trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The trace context to store with work that arrived carrying its own ``headers``:
    the current span's when that span is of the work's trace (the call that brought the
    work is then its nearer ancestor, so the trace goes on through it), else the work's
    own ``headers`` (work batched into a call of another trace keeps its own)."""
    carried = span_context_of(headers)
    current = trace.get_current_span().get_span_context()
    if carried is None or not current.is_valid or current.trace_id != carried.trace_id:
        return dict(headers)
    return current_trace_headers()
