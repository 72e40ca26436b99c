"""CreateTrigger, ListTriggers and SetTriggerEnabled."""

from __future__ import annotations

from pushwarden.runtime.auth import require_app
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.domain.triggers import check_trigger
from pushwarden.services.scheduler.handlers.triggers import StoredTrigger, TriggerHandlers
from pushwarden.services.scheduler.rpc.context import Context

MAX_PAGE = 1000


class TriggerRpcs(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The trigger RPCs."""

    _triggers: TriggerHandlers

    async def CreateTrigger(
        self, request: messages_pb2.CreateTriggerRequest, context: Context
    ) -> messages_pb2.CreateTriggerResponse:
        """Store an enabled trigger (idempotent by key)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("idempotency_key", request.idempotency_key)
        if problems.required("trigger", request.HasField("trigger")):
            check_trigger(problems, "trigger", request.trigger)
        problems.raise_if_any()
        stored, replayed = await self._triggers.create(
            request.app_id, request.trigger, request.idempotency_key
        )
        return messages_pb2.CreateTriggerResponse(trigger=trigger_proto(stored), replayed=replayed)

    async def ListTriggers(
        self, request: messages_pb2.ListTriggersRequest, context: Context
    ) -> messages_pb2.ListTriggersResponse:
        """An app's triggers by id, optionally only enabled or disabled ones."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_PAGE)
        enabled = request.enabled if request.HasField("enabled") else None
        filters = {"enabled": enabled}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        rows = await self._triggers.page(
            request.app_id, enabled, cursor.after[0] if cursor else None, size + 1
        )
        response = messages_pb2.ListTriggersResponse(
            triggers=[trigger_proto(row) for row in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = encode_page_token((rows[size - 1].trigger_id,), filters)
        return response

    async def SetTriggerEnabled(
        self, request: messages_pb2.SetTriggerEnabledRequest, context: Context
    ) -> messages_pb2.SetTriggerEnabledResponse:
        """Enable or disable a trigger (idempotent)."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("trigger_id", request.trigger_id)
        problems.raise_if_any()
        stored = await self._triggers.set_enabled(
            request.app_id, request.trigger_id, request.enabled
        )
        return messages_pb2.SetTriggerEnabledResponse(trigger=trigger_proto(stored))


def trigger_proto(row: StoredTrigger) -> resources_pb2.Trigger:
    """A stored trigger as the contract's Trigger."""
    trigger = resources_pb2.Trigger.FromString(row.definition)
    trigger.trigger_id = row.trigger_id
    trigger.enabled = row.enabled
    trigger.created_at.FromDatetime(row.created_at)
    return trigger
