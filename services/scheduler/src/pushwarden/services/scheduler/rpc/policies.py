"""SetPolicy, GetPolicy."""

from __future__ import annotations

from pushwarden.runtime.auth import require_app
from pushwarden.scheduler.v1 import messages_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.domain.policy import PolicyChange
from pushwarden.services.scheduler.handlers.policies import PolicyHandlers
from pushwarden.services.scheduler.rpc.context import Context


class PolicyRpcs(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The app policy RPCs."""

    _policies: PolicyHandlers

    async def SetPolicy(
        self, request: messages_pb2.SetPolicyRequest, context: Context
    ) -> messages_pb2.SetPolicyResponse:
        """Change the fields the mask names (all when unset); the same policy again
        changes nothing."""
        require_app(request.app_id)
        policy = await self._policies.set(PolicyChange.from_proto(request))
        return messages_pb2.SetPolicyResponse(policy=policy)

    async def GetPolicy(
        self, request: messages_pb2.GetPolicyRequest, context: Context
    ) -> messages_pb2.GetPolicyResponse:
        """The app's effective policy (the defaults, version 0, when never set)."""
        require_app(request.app_id)
        return messages_pb2.GetPolicyResponse(policy=await self._policies.get(request.app_id))
