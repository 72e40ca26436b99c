"""GetAudienceHealth."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.services.consent.handlers.health import HealthHandlers, HealthQuery
from pushwarden.services.consent.rpc.context import Context


class HealthRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The audience-health RPC."""

    _health: HealthHandlers

    async def GetAudienceHealth(
        self, request: messages_pb2.GetAudienceHealthRequest, context: Context
    ) -> messages_pb2.GetAudienceHealthResponse:
        """Device opt-in figures, opt-outs over a window, and both per category."""
        require_app(request.app_id)
        return await self._health.audience_health(HealthQuery.from_proto(request))
