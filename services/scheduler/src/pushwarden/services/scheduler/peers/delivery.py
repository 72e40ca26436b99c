"""Calls to delivery: handing over batches of sends (``Deliver``, idempotent by send id),
recording campaign and trigger assignments, and reading open hours for best-time sends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import grpc

from pushwarden.common.v1 import types_pb2
from pushwarden.delivery.v1 import delivery_pb2, delivery_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.services.scheduler.peers import PeerUnavailable

DELIVERY_SERVICE = delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"]
DELIVER_BATCH = 1000  # Deliver's limit of sends per call
ASSIGNMENT_BATCH = 10_000  # RecordAssignments' limit per call


class DeliveryPeer:
    """Delivery over one channel, with a deadline per call."""

    def __init__(self, channel: grpc.aio.Channel, timeout_s: float) -> None:
        self._stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        self._timeout = timeout_s

    async def deliver(
        self, app_id: str, sends: Sequence[resources_pb2.Send]
    ) -> dict[str, types_pb2.ItemResult]:
        """Hand ``sends`` to delivery; each send id's result (APPLIED and UNCHANGED both
        mean delivery holds it; REJECTED is final for that send)."""
        results: dict[str, types_pb2.ItemResult] = {}
        for start in range(0, len(sends), DELIVER_BATCH):
            try:
                answer = await self._stub.Deliver(
                    messages_pb2.DeliverRequest(
                        app_id=app_id, sends=list(sends[start : start + DELIVER_BATCH])
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                raise PeerUnavailable.of("delivery", error) from error
            results.update((result.id, result) for result in answer.results)
        return results

    async def record_assignments(
        self,
        app_id: str,
        assignments: Sequence[resources_pb2.Assignment],
        *,
        campaign_id: str = "",
        trigger_id: str = "",
    ) -> None:
        """Record who was assigned what (idempotent: a repeated batch changes nothing)."""
        for start in range(0, len(assignments), ASSIGNMENT_BATCH):
            request = messages_pb2.RecordAssignmentsRequest(
                app_id=app_id, assignments=list(assignments[start : start + ASSIGNMENT_BATCH])
            )
            if campaign_id:
                request.campaign_id = campaign_id
            else:
                request.trigger_id = trigger_id
            try:
                await self._stub.RecordAssignments(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as error:
                raise PeerUnavailable.of("delivery", error) from error

    async def open_hours(
        self, app_id: str, user_ids: Sequence[str], lookback: timedelta
    ) -> messages_pb2.GetOpenHoursResponse:
        """Each user's opens by UTC hour, and the app's, over ``lookback``."""
        request = messages_pb2.GetOpenHoursRequest(app_id=app_id, user_ids=list(user_ids))
        request.lookback.FromTimedelta(lookback)
        try:
            return await self._stub.GetOpenHours(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise PeerUnavailable.of("delivery", error) from error
