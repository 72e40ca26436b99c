"""Deliver and GetDelivery."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import trace

from pushwarden.common.v1 import types_pb2
from pushwarden.delivery.v1 import delivery_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.telemetry import nearest_trace_headers, stored_trace_headers
from pushwarden.runtime.validation import Violations
from pushwarden.services.delivery.domain.sends import check_deliver
from pushwarden.services.delivery.handlers.deliveries import DeliveryHandlers
from pushwarden.services.delivery.rpc.context import Context

_ITEM_STATUS = {
    "APPLIED": types_pb2.ITEM_STATUS_APPLIED,
    "UNCHANGED": types_pb2.ITEM_STATUS_UNCHANGED,
    "REJECTED": types_pb2.ITEM_STATUS_REJECTED,
}


class DeliveryRpcs(delivery_pb2_grpc.DeliveryServiceServicer):
    """The send RPCs."""

    _deliveries: DeliveryHandlers

    async def Deliver(
        self, request: messages_pb2.DeliverRequest, context: Context
    ) -> messages_pb2.DeliverResponse:
        """Store a batch of sends (before answering); one result per send."""
        require_app(request.app_id)
        sends = check_deliver(request.app_id, request.sends)
        _continue_traces(request.sends)
        outcomes = await self._deliveries.deliver(request.app_id, sends)
        return messages_pb2.DeliverResponse(
            results=[
                types_pb2.ItemResult(
                    id=outcome.send_id,
                    status=_ITEM_STATUS[outcome.status],
                    field=outcome.field,
                    message=outcome.message,
                )
                for outcome in outcomes
            ]
        )

    async def GetDelivery(
        self, request: messages_pb2.GetDeliveryRequest, context: Context
    ) -> messages_pb2.GetDeliveryResponse:
        """A send's status, devices and attempts."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("send_id", request.send_id)
        problems.raise_if_any()
        record = await self._deliveries.get(request.app_id, request.send_id)
        return messages_pb2.GetDeliveryResponse(delivery=record.to_proto())


def _continue_traces(sends: Iterable[resources_pb2.Send]) -> None:
    """Let each traced send that this call belongs to the trace of carry this call's
    span context into the send queue instead of its own (the provider attempts then
    descend from this call); a send of another trace keeps the context it came with."""
    if not trace.get_current_span().get_span_context().is_valid:
        return
    for send in sends:
        carried = stored_trace_headers(send.traceparent, send.tracestate)
        if carried:
            nearest = nearest_trace_headers(carried)
            send.traceparent = nearest.get("traceparent", "")
            send.tracestate = nearest.get("tracestate", "")
