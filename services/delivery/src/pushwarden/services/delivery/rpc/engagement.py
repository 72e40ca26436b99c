"""RecordAssignments and ReportEngagement."""

from __future__ import annotations

from pushwarden.delivery.v1 import delivery_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.services.delivery.domain.engagement import (
    check_record_assignments,
    check_report_engagement,
)
from pushwarden.services.delivery.handlers.engagement import EngagementHandlers
from pushwarden.services.delivery.rpc.context import Context


class EngagementRpcs(delivery_pb2_grpc.DeliveryServiceServicer):
    """The RPCs that record who was assigned what and how users engaged."""

    _engagement: EngagementHandlers

    async def RecordAssignments(
        self, request: messages_pb2.RecordAssignmentsRequest, context: Context
    ) -> messages_pb2.RecordAssignmentsResponse:
        """Store a batch of assignments (before answering); one result per item."""
        require_app(request.app_id)
        subject, items = check_record_assignments(request)
        results = await self._engagement.record_assignments(request.app_id, subject, items)
        return messages_pb2.RecordAssignmentsResponse(
            results=[result.to_proto() for result in results]
        )

    async def ReportEngagement(
        self, request: messages_pb2.ReportEngagementRequest, context: Context
    ) -> messages_pb2.ReportEngagementResponse:
        """Store a batch of engagement events (before answering); one result per event."""
        require_app(request.app_id)
        events = check_report_engagement(request)
        results = await self._engagement.report_engagement(request.app_id, events)
        return messages_pb2.ReportEngagementResponse(
            results=[result.to_proto() for result in results]
        )
