"""CheckEligibility."""

from __future__ import annotations

from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.consent import CHANNELS, PUSH
from pushwarden.services.consent.handlers.eligibility import (
    MAX_USERS,
    EligibilityHandlers,
    EligibilityQuery,
)
from pushwarden.services.consent.rpc.context import Context


class EligibilityRpcs(consent_pb2_grpc.ConsentServiceServicer):
    """Batch eligibility."""

    _eligibility: EligibilityHandlers

    async def CheckEligibility(
        self, request: messages_pb2.CheckEligibilityRequest, context: Context
    ) -> messages_pb2.CheckEligibilityResponse:
        """Everything the policy needs about up to 1,000 users for one category."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("category_id", request.category_id)
        problems.caller_id("topic_id", request.topic_id, required=False)
        users = problems.caller_ids("user_ids", request.user_ids, limit=MAX_USERS)
        problems.enum("channel", request.channel, CHANNELS, required=False)
        problems.raise_if_any()
        return await self._eligibility.check(
            EligibilityQuery(
                app_id=request.app_id,
                category_id=request.category_id,
                topic_id=request.topic_id,
                user_ids=users,
                channel=CHANNELS.get(request.channel, PUSH),
            )
        )
