"""RecordPermissionPrompt, GetOptInFunnel."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.services.consent.domain.prompts import FunnelQuery, PromptEventSpec
from pushwarden.services.consent.handlers.common import request_digest
from pushwarden.services.consent.handlers.prompts import PromptHandlers
from pushwarden.services.consent.rpc.context import Context


class PromptRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The permission-prompt RPCs."""

    _prompts: PromptHandlers

    async def RecordPermissionPrompt(
        self, request: messages_pb2.RecordPermissionPromptRequest, context: Context
    ) -> messages_pb2.RecordPermissionPromptResponse:
        """Record one funnel event, once per idempotency key."""
        require_app(request.app_id)
        event = PromptEventSpec.from_proto(request, now=self._prompts.now())
        # The digest is of the request as sent, so a retry without occurred_at matches
        # although its default (now) has moved on.
        replayed = await self._prompts.record(event, request_digest(request))
        return messages_pb2.RecordPermissionPromptResponse(replayed=replayed)

    async def GetOptInFunnel(
        self, request: messages_pb2.GetOptInFunnelRequest, context: Context
    ) -> messages_pb2.GetOptInFunnelResponse:
        """Funnel counts and rates per context over a period, and their total."""
        require_app(request.app_id)
        funnel = await self._prompts.funnel(
            FunnelQuery.from_proto(request, now=self._prompts.now())
        )
        return messages_pb2.GetOptInFunnelResponse(
            contexts=[stats.to_proto() for stats in funnel.contexts],
            total=funnel.total.to_proto(),
        )
