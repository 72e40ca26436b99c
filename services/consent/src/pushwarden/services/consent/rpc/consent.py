"""RecordConsent, GetConsentState."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.consent import ConsentRequest
from pushwarden.services.consent.handlers.consent import ChoiceHandlers
from pushwarden.services.consent.rpc.context import Context


class ConsentRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The consent RPCs."""

    _consent: ChoiceHandlers

    async def RecordConsent(
        self, request: messages_pb2.RecordConsentRequest, context: Context
    ) -> messages_pb2.RecordConsentResponse:
        """Record an opt-in or opt-out."""
        require_app(request.app_id)
        return await self._consent.record_consent(ConsentRequest.from_proto(request), request)

    async def GetConsentState(
        self, request: messages_pb2.GetConsentStateRequest, context: Context
    ) -> messages_pb2.GetConsentStateResponse:
        """A user's consent state."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        problems.raise_if_any()
        state = await self._consent.consent_state(request.app_id, request.user_id)
        return messages_pb2.GetConsentStateResponse(state=state)
