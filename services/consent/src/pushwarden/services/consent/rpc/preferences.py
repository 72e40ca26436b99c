"""SetPreferences, GetPreferences."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.preferences import PreferenceChange
from pushwarden.services.consent.handlers.preferences import PreferenceHandlers
from pushwarden.services.consent.rpc.context import Context


class PreferenceRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """The preference center RPCs."""

    _preferences: PreferenceHandlers

    async def SetPreferences(
        self, request: messages_pb2.SetPreferencesRequest, context: Context
    ) -> messages_pb2.SetPreferencesResponse:
        """Change a user's preferences."""
        require_app(request.app_id)
        return await self._preferences.set(PreferenceChange.from_proto(request), request)

    async def GetPreferences(
        self, request: messages_pb2.GetPreferencesRequest, context: Context
    ) -> messages_pb2.GetPreferencesResponse:
        """A user's preferences."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        problems.raise_if_any()
        preferences = await self._preferences.get(request.app_id, request.user_id)
        return messages_pb2.GetPreferencesResponse(preferences=preferences)
