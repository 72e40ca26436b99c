"""One trace follows a transactional send from the backend's call to the provider attempt,
on SQLite and PostgreSQL.

The backend (a client traced as an OpenTelemetry-instrumented one would be), the
scheduler and delivery each have telemetry of their own (their own providers and
service names) exporting to one in-memory span exporter. The chain of parents from the
APNs attempt back to the backend's span must cross every hop: the backend's call, the
scheduler's server span, the dispatch pass that decided the send (after the intent
queue), the outbox's hand-over and its Deliver call, delivery's server span, and
(after delivery's send queue) the attempt; a context dropped at any hop ends the chain
early or starts another trace.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pushwarden.common.v1 import content_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc
from pushwarden.delivery.v1 import messages_pb2 as delivery_messages
from pushwarden.delivery.v1 import resources_pb2 as delivery_resources
from pushwarden.runtime.client import open_channel
from pushwarden.runtime.servicetest import local_test_config, serving
from pushwarden.runtime.settings import TelemetrySettings
from pushwarden.runtime.telemetry import Telemetry, setup_telemetry
from pushwarden.scheduler.v1 import messages_pb2, scheduler_pb2_grpc
from pushwarden.services.delivery.bootstrap import bootstrap as delivery_bootstrap
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.scheduler.bootstrap import bootstrap

from .conftest import APP, Platform, _sibling_database

if TYPE_CHECKING:
    from pushwarden.delivery.v1.delivery_pb2_grpc import (
        DeliveryServiceAsyncStub as DeliveryStub,
    )
    from pushwarden.scheduler.v1.scheduler_pb2_grpc import (
        SchedulerServiceAsyncStub as SchedulerStub,
    )

pytestmark = pytest.mark.storage

SEND_TRANSACTIONAL = "/pushwarden.scheduler.v1.SchedulerService/SendTransactional"
DELIVER = "/pushwarden.delivery.v1.DeliveryService/Deliver"

# Each hop of a traced send, from the backend's own span to the provider attempt:
# (service.name, span name, kind).
FULL_CHAIN = [
    ("backend", "place order", SpanKind.INTERNAL),
    ("backend", SEND_TRANSACTIONAL, SpanKind.CLIENT),
    ("pushwarden-scheduler", SEND_TRANSACTIONAL, SpanKind.SERVER),
    ("pushwarden-scheduler", "decide send", SpanKind.INTERNAL),
    ("pushwarden-scheduler", "hand over to delivery", SpanKind.INTERNAL),
    ("pushwarden-scheduler", DELIVER, SpanKind.CLIENT),
    ("pushwarden-delivery", DELIVER, SpanKind.SERVER),
    ("pushwarden-delivery", "apns push", SpanKind.CLIENT),
]


def traced(spans: InMemorySpanExporter, service: str) -> Telemetry:
    """Telemetry for one process of the test, exporting to the shared ``spans``."""
    return setup_telemetry(
        TelemetrySettings(service_name=service), span_exporter=spans, install_global=False
    )


def order_update(key: str, user: str) -> messages_pb2.SendTransactionalRequest:
    return messages_pb2.SendTransactionalRequest(
        app_id=APP,
        user_id=user,
        category_id="orders",
        idempotency_key=key,
        content=content_pb2.Content(title="Your order shipped", body="Arrives Tuesday"),
    )


class TracedPlatform:
    """A traced delivery (on a database of its own, beside the platform's untraced one)
    and traced schedulers pointed at it, all exporting to ``spans``."""

    def __init__(self, platform: Platform, directory: Path) -> None:
        self.platform = platform
        self.directory = directory
        self.spans = InMemorySpanExporter()
        self.delivery_addr = ""
        self.telemetries: list[Telemetry] = []
        self.backend = self.telemetry("backend")

    def telemetry(self, service: str) -> Telemetry:
        telemetry = traced(self.spans, service)
        self.telemetries.append(telemetry)
        return telemetry

    @contextlib.asynccontextmanager
    async def delivery(self) -> AsyncIterator[DeliveryStub]:
        platform = self.platform
        with _sibling_database(platform.database_url, self.directory, "traced_delivery") as url:
            config = local_test_config(
                DeliveryConfig,
                url,
                CONSENT_ADDR=platform.addresses["consent"],
                CREDENTIALS=str(platform.sandbox.credentials_file),
                CLOCK_FILE=str(platform.clock_file),
                DISPATCH_POLL_S="0.05",
            )
            app = delivery_bootstrap(config, telemetry=self.telemetry("pushwarden-delivery"))
            async with serving(app) as channel:
                assert app.runtime is not None
                self.delivery_addr = f"127.0.0.1:{app.runtime.port}"
                stub: DeliveryStub = delivery_pb2_grpc.DeliveryServiceStub(channel)
                yield stub

    @contextlib.asynccontextmanager
    async def scheduler(
        self, *, traced_client: bool = True, **extra: str
    ) -> AsyncIterator[SchedulerStub]:
        """A traced scheduler, called through the backend's traced client channel (or an
        untraced one)."""
        config = self.platform.scheduler_config(DELIVERY_ADDR=self.delivery_addr, **extra)
        app = bootstrap(config, telemetry=self.telemetry("pushwarden-scheduler"))
        async with serving(app) as untraced:
            assert app.runtime is not None
            async with open_channel(
                f"127.0.0.1:{app.runtime.port}", telemetry=self.backend
            ) as channel:
                stub: SchedulerStub = scheduler_pb2_grpc.SchedulerServiceStub(
                    channel if traced_client else untraced
                )
                yield stub

    def close(self) -> None:
        for telemetry in self.telemetries:
            telemetry.shutdown()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def attempt_of(self, send_id: str) -> ReadableSpan | None:
        for span in self.finished():
            if (
                span.name == "apns push"
                and (span.attributes or {}).get("pushwarden.send_id") == send_id
            ):
                return span
        return None

    async def wait_for_attempt(self, delivery: DeliveryStub, send_id: str) -> ReadableSpan:
        # The attempt's span is made once its outcome is known, the status written after.
        async def delivered() -> bool:
            if self.attempt_of(send_id) is None:
                return False
            answer = await delivery.GetDelivery(
                delivery_messages.GetDeliveryRequest(app_id=APP, send_id=send_id)
            )
            return answer.delivery.status == delivery_resources.DELIVERY_STATUS_DELIVERED

        await self.platform.eventually(delivered, what=f"the traced delivery of {send_id}")
        span = self.attempt_of(send_id)
        assert span is not None
        return span


def ancestry(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """``span`` and its parents up to the root (or up to a parent no exporter saw),
    root first; every one of them must be of ``span``'s trace."""
    by_id = {(s.context.trace_id, s.context.span_id): s for s in spans if s.context}
    chain = [span]
    while chain[-1].parent is not None:
        parent = chain[-1].parent
        assert span.context is not None
        assert parent.trace_id == span.context.trace_id, f"{chain[-1].name} left the trace"
        found = by_id.get((parent.trace_id, parent.span_id))
        if found is None:
            break
        chain.append(found)
    return chain[::-1]


def hops(chain: Sequence[ReadableSpan]) -> list[tuple[str, str, SpanKind]]:
    return [(str(s.resource.attributes["service.name"]), s.name, s.kind) for s in chain]


@pytest.fixture
async def traced_platform(platform: Platform, tmp_path: Path) -> AsyncIterator[TracedPlatform]:
    world = TracedPlatform(platform, tmp_path)
    try:
        yield world
    finally:
        world.close()


async def test_one_trace_follows_a_send_from_the_backend_to_the_provider_attempt(
    platform: Platform, traced_platform: TracedPlatform
) -> None:
    world = traced_platform
    await platform.register("ada")
    async with world.delivery() as delivery, world.scheduler() as scheduler:
        tracer = world.backend.tracer("backend")
        with tracer.start_as_current_span("place order") as placing:
            accepted = await scheduler.SendTransactional(order_update("order-1", "ada"))
        attempt = await world.wait_for_attempt(delivery, accepted.send_id)

    chain = ancestry(attempt, world.finished())
    assert hops(chain) == FULL_CHAIN
    assert chain[0].context is not None
    assert chain[0].context.span_id == placing.get_span_context().span_id
    decide = chain[3]
    assert decide.attributes is not None
    assert decide.attributes["pushwarden.send_id"] == accepted.send_id
    assert decide.attributes["pushwarden.decision.outcome"] == "ALLOW"
    # The decision's span ends when the pass wrote it, before the outbox hands it over.
    assert decide.end_time is not None
    assert chain[4].start_time is not None
    assert decide.end_time <= chain[4].start_time


async def test_a_hand_over_of_sends_of_two_traces_continues_one_and_links_the_other(
    platform: Platform, traced_platform: TracedPlatform
) -> None:
    # Two traced sends are accepted by a scheduler that does not dispatch, then a
    # dispatching one decides them in one pass and hands them over in one Deliver call:
    # that call can belong to one trace only. The other send's attempt must still descend
    # from its own deciding span (delivery keeps a send's context when the call that
    # brought it is of another trace), and the hand-over must link it.
    world = traced_platform
    await platform.register("ada")
    await platform.register("bob")
    async with world.delivery() as delivery:
        async with world.scheduler(DISPATCH="false") as scheduler:
            tracer = world.backend.tracer("backend")
            sent = []
            for user in ("ada", "bob"):
                with tracer.start_as_current_span("place order"):
                    sent.append(
                        (await scheduler.SendTransactional(order_update(f"o-{user}", user))).send_id
                    )
        async with world.scheduler():
            attempts = [await world.wait_for_attempt(delivery, send_id) for send_id in sent]

    chains = [ancestry(attempt, world.finished()) for attempt in attempts]
    assert len({c[0].context.trace_id for c in chains if c[0].context}) == 2
    carried = [c for c in chains if len(c) == len(FULL_CHAIN)]
    kept = [c for c in chains if len(c) != len(FULL_CHAIN)]
    assert len(carried) == 1, [hops(c) for c in chains]
    assert hops(carried[0]) == FULL_CHAIN
    [other] = kept
    assert hops(other) == [*FULL_CHAIN[:4], FULL_CHAIN[-1]]
    hand_over = carried[0][4]
    assert other[3].context is not None
    assert [(link.context.trace_id, link.context.span_id) for link in hand_over.links] == [
        (other[3].context.trace_id, other[3].context.span_id)
    ]
    assert hand_over.attributes is not None
    assert hand_over.attributes["pushwarden.sends"] == 2


async def test_a_send_from_an_untraced_backend_starts_its_trace_at_the_scheduler(
    platform: Platform, traced_platform: TracedPlatform
) -> None:
    # No trace context in the call: the scheduler's server span is the root, and the
    # chain below it is the same.
    world = traced_platform
    await platform.register("ada")
    async with world.delivery() as delivery, world.scheduler(traced_client=False) as scheduler:
        accepted = await scheduler.SendTransactional(order_update("order-2", "ada"))
        attempt = await world.wait_for_attempt(delivery, accepted.send_id)

    chain = ancestry(attempt, world.finished())
    assert hops(chain) == FULL_CHAIN[2:]
    assert chain[0].parent is None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A tiny OTLP/gRPC trace collector: keeps every span with its resource's service
    name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, otlp_trace.Span]] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class MetricsCollector(metrics_service_pb2_grpc.MetricsServiceServicer):
    """Counts the metric exports (the service exports metrics to the same endpoint)."""

    def __init__(self) -> None:
        self.exports = 0

    async def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.exports += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[tuple[Collector, MetricsCollector, int]]:
    """The collectors served on a free port of 127.0.0.1."""
    spans, metrics = Collector(), MetricsCollector()
    server = grpc.aio.server()
    # opentelemetry-proto's generated gRPC modules carry no type stubs.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield spans, metrics, port
    finally:
        await server.stop(None)


async def test_a_scheduler_process_exporting_otlp_sends_its_spans_of_a_send_to_the_collector(
    platform: Platform, tmp_path: Path
) -> None:
    # The scheduler as ``make run`` starts it, configured through the environment with
    # the OTLP exporter; the backend's call carries a traceparent. Once the send is
    # delivered, a graceful stop flushes what the batching exporter still holds.
    await platform.register("ada")
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    async with collector() as (received, metrics, collector_port):
        scheduler = platform.scheduler_process(
            tmp_path,
            OTEL_EXPORTER="otlp",
            OTEL_ENDPOINT=f"http://127.0.0.1:{collector_port}",
        )
        try:
            await scheduler.start()
            async with grpc.aio.insecure_channel(scheduler.address) as channel:
                stub: SchedulerStub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
                accepted = await stub.SendTransactional(
                    order_update("order-otlp", "ada"),
                    metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
                )

            async def delivered() -> bool:
                try:
                    answer = await platform.delivery.GetDelivery(
                        delivery_messages.GetDeliveryRequest(app_id=APP, send_id=accepted.send_id)
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.NOT_FOUND:  # not handed over yet
                        return False
                    raise
                status = answer.delivery.status
                return status == delivery_resources.DELIVERY_STATUS_DELIVERED

            await platform.eventually(delivered, what="delivery of the send")
        finally:
            await scheduler.stop()
        assert scheduler.process is not None
        assert scheduler.process.returncode == 0, scheduler.output()

    ours = {
        span.name: span
        for service, span in received.spans
        if service == "pushwarden-scheduler" and span.trace_id.hex() == trace_id
    }
    server = ours[SEND_TRANSACTIONAL]
    assert server.parent_span_id.hex() == parent_id
    assert ours["decide send"].parent_span_id == server.span_id
    assert ours["hand over to delivery"].parent_span_id == ours["decide send"].span_id
    assert ours[DELIVER].parent_span_id == ours["hand over to delivery"].span_id
    assert metrics.exports >= 1
