"""Telemetry of provider attempts: a span per attempt continuing the send's trace, and
counters and a latency histogram per provider and outcome.

The instruments come from the process's providers, which the composition root hands in
when telemetry is enabled (OpenTelemetry's global ones otherwise: no-ops unless
installed); tests hand in their own.
The span of an attempt is made once its outcome is known (a batch of pushes shares one
provider call), with the attempt's own start and end times.
"""

from __future__ import annotations

import time

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from pushwarden.runtime.telemetry import context_from_headers

INSTRUMENTATION = "pushwarden.delivery"


class AttemptTelemetry:
    """Records each provider attempt as a span and in the delivery metrics."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        meter = metrics.get_meter(INSTRUMENTATION, meter_provider=meter_provider)
        self._attempts = meter.create_counter(
            "pushwarden.delivery.attempts",
            unit="{attempt}",
            description="Provider attempts (one per device and try), by provider and outcome.",
        )
        self._requests = meter.create_counter(
            "pushwarden.delivery.provider_requests",
            unit="{request}",
            description="HTTP requests the providers were sent (the SDKs' resends included).",
        )
        self._latency = meter.create_histogram(
            "pushwarden.delivery.attempt.duration",
            unit="s",
            description="Time from the provider call to its outcome, by provider and outcome.",
        )

    def attempt(
        self,
        *,
        app_id: str,
        send_id: str,
        traceparent: str,
        tracestate: str,
        provider: str,
        outcome: str,
        reason: str,
        retry_number: int,
        apns_id: str,
        requests: int,
        latency_s: float,
    ) -> None:
        """One attempt that just ended after ``latency_s`` seconds."""
        labels = {"provider": provider, "outcome": outcome}
        self._attempts.add(1, labels)
        self._requests.add(requests, labels)
        self._latency.record(latency_s, labels)
        headers = {"traceparent": traceparent}
        if tracestate:
            headers["tracestate"] = tracestate
        parent = context_from_headers(headers) if traceparent else None
        ended = time.time_ns()
        span = self._tracer.start_span(
            f"{provider} push",
            context=parent,
            kind=SpanKind.CLIENT,
            start_time=ended - int(latency_s * 1e9),
            attributes={
                "pushwarden.app_id": app_id,
                "pushwarden.send_id": send_id,
                "pushwarden.delivery.provider": provider,
                "pushwarden.delivery.outcome": outcome,
                "pushwarden.delivery.reason": reason,
                "pushwarden.delivery.retry_number": retry_number,
                "pushwarden.delivery.requests": requests,
                "pushwarden.delivery.apns_id": apns_id,
            },
        )
        if outcome != "DELIVERED":
            span.set_status(Status(StatusCode.ERROR, f"{outcome}: {reason}"))
        span.end(end_time=ended)
