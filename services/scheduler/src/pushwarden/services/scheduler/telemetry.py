"""Spans of a traced send's way through the scheduler's queues.

SendTransactional stores the caller's trace context (its server span's) with the
intent. From there the stored context is the carrier:

- every dispatch pass that decides the intent is a span of its trace (``decide send``),
  and an allowed send carries that span's context to delivery in ``Send.traceparent``
  (the contract's "deciding span"), from the outbox onwards;
- the outbox's hand-over of a batch is a span (``hand over to delivery``) continuing the
  first traced send's trace and linking every other one (one ``Deliver`` call carries
  sends of many traces); the Deliver call made inside it carries its context to
  delivery's server span.

Intents stored without a context (campaign and trigger sends) get no spans of their
own. With telemetry disabled nothing here makes a span or parses a header.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from types import TracebackType

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Status, StatusCode

from pushwarden.common.v1 import decision_pb2
from pushwarden.delivery.v1 import resources_pb2 as delivery_pb2
from pushwarden.runtime.telemetry import (
    Telemetry,
    span_context_of,
    span_trace_headers,
    stored_trace_headers,
)
from pushwarden.services.scheduler.domain.intents import ClaimedIntent, Verdict

INSTRUMENTATION = "pushwarden.scheduler"
DECIDE_SPAN = "decide send"
HAND_OVER_SPAN = "hand over to delivery"


class SendTracing:
    """Makes the scheduler's spans of traced sends (nothing when telemetry is off)."""

    def __init__(self, telemetry: Telemetry | None = None) -> None:
        enabled = telemetry is not None and telemetry.enabled
        self._tracer = telemetry.tracer(INSTRUMENTATION) if telemetry and enabled else None

    def deciding(
        self, intents: Sequence[ClaimedIntent]
    ) -> tuple[list[ClaimedIntent], DecidingSpans]:
        """Start a span for each intent that has a stored context; return the intents
        with each traced one carrying its span's context instead (what its ``Send``
        then carries; the stored context stays as it was for later passes), and the
        spans to end once the pass decided."""
        spans = DecidingSpans()
        if self._tracer is None:
            return list(intents), spans
        carried: list[ClaimedIntent] = []
        for intent in intents:
            headers = stored_trace_headers(intent.traceparent, intent.tracestate)
            if not headers:
                carried.append(intent)
                continue
            parent = span_context_of(headers)
            span = self._tracer.start_span(
                DECIDE_SPAN,
                context=trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None,
                attributes={
                    "pushwarden.app_id": intent.app_id,
                    "pushwarden.send_id": intent.send_id,
                    "pushwarden.scheduler.lane": intent.lane.name,
                    "pushwarden.scheduler.deferrals": intent.deferrals,
                },
            )
            spans.add(intent, span)
            own = span_trace_headers(span)
            carried.append(
                dataclasses.replace(
                    intent,
                    traceparent=own.get("traceparent", ""),
                    tracestate=own.get("tracestate", ""),
                )
            )
        return carried, spans

    @contextlib.contextmanager
    def handing_over(self, app_id: str, sends: Sequence[delivery_pb2.Send]) -> Iterator[None]:
        """The hand-over of ``sends`` to delivery as the current span (none when no send
        is traced): a child of the first traced send's deciding span, linked to every
        other one's."""
        if self._tracer is None:
            yield
            return
        contexts = [
            context
            for context in (
                span_context_of(stored_trace_headers(send.traceparent, send.tracestate))
                for send in sends
            )
            if context is not None
        ]
        if not contexts:
            yield
            return
        first, *others = contexts
        with self._tracer.start_as_current_span(
            HAND_OVER_SPAN,
            context=trace.set_span_in_context(NonRecordingSpan(first)),
            links=[Link(context) for context in others],
            attributes={"pushwarden.app_id": app_id, "pushwarden.sends": len(sends)},
        ):
            yield


class DecidingSpans:
    """The ``decide send`` spans of one dispatch pass, by intent; as a context manager it
    ends them all on the way out, marking them failed when the pass raised (the intents
    are then decided again by a later pass, in spans of their own)."""

    def __init__(self) -> None:
        self._spans: dict[tuple[str, str], trace.Span] = {}

    def add(self, intent: ClaimedIntent, span: trace.Span) -> None:
        """Track ``intent``'s span."""
        self._spans[intent.key] = span

    def decided(self, verdicts: Sequence[Verdict]) -> None:
        """Record on each traced intent's span what the pass decided for it."""
        if not self._spans:
            return
        for verdict in verdicts:
            span = self._spans.get(verdict.intent.key)
            if span is None:
                continue
            span.set_attribute("pushwarden.decision.outcome", verdict.outcome)
            if verdict.reason:
                span.set_attribute(
                    "pushwarden.decision.reason",
                    decision_pb2.ReasonCode.Name(decision_pb2.ReasonCode.ValueType(verdict.reason)),
                )

    def __enter__(self) -> DecidingSpans:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for span in self._spans.values():
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            span.end()
        self._spans.clear()
