"""SendTransactional and GetSend."""

from __future__ import annotations

from datetime import UTC, datetime

from pushwarden.common.v1 import decision_pb2, types_pb2
from pushwarden.runtime.auth import require_app
from pushwarden.runtime.telemetry import current_trace_headers
from pushwarden.runtime.validation import Violations, decode_page_token, encode_page_token
from pushwarden.scheduler.v1 import messages_pb2, resources_pb2, scheduler_pb2_grpc
from pushwarden.services.scheduler.domain.content import check_content, check_translations
from pushwarden.services.scheduler.domain.intents import IntentRecord, IntentState
from pushwarden.services.scheduler.handlers.sends import SendHandlers, TransactionalRequest
from pushwarden.services.scheduler.rpc.context import Context

DEFAULT_EXPORT_PAGE = 1000
MAX_EXPORT_PAGE = 10_000
_PRIORITIES = (types_pb2.PRIORITY_LOW, types_pb2.PRIORITY_NORMAL, types_pb2.PRIORITY_HIGH)
_OUTCOMES = {
    "ALLOW": decision_pb2.OUTCOME_ALLOW,
    "DEFER": decision_pb2.OUTCOME_DEFER,
    "DROP": decision_pb2.OUTCOME_DROP,
}


class SendRpcs(scheduler_pb2_grpc.SchedulerServiceServicer):
    """The per-send RPCs."""

    _sends: SendHandlers

    async def SendTransactional(
        self, request: messages_pb2.SendTransactionalRequest, context: Context
    ) -> messages_pb2.SendTransactionalResponse:
        """Store one transactional send (before answering) for immediate dispatch."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        problems.caller_id("category_id", request.category_id)
        problems.caller_id("topic_id", request.topic_id, required=False)
        problems.caller_id("idempotency_key", request.idempotency_key)
        if problems.required("content", request.HasField("content")):
            check_content(problems, "content", request.content)
        check_translations(
            problems, "localized", [(entry.locale, entry.content) for entry in request.localized]
        )
        problems.enum("priority", request.priority, _PRIORITIES, required=False)
        problems.raise_if_any()
        trace = current_trace_headers()
        accepted = await self._sends.send_transactional(
            TransactionalRequest(
                app_id=request.app_id,
                user_id=request.user_id,
                category_id=request.category_id,
                idempotency_key=request.idempotency_key,
                body=request.SerializeToString(deterministic=True),
                topic_id=request.topic_id,
                priority=request.priority or types_pb2.PRIORITY_HIGH,
                respect_quiet_hours=request.respect_quiet_hours,
                expires_at=request.expires_at.ToDatetime(UTC)
                if request.HasField("expires_at")
                else None,
                traceparent=trace.get("traceparent", ""),
                tracestate=trace.get("tracestate", ""),
            )
        )
        response = messages_pb2.SendTransactionalResponse(
            send_id=accepted.send_id, replayed=accepted.replayed
        )
        response.accepted_at.FromDatetime(accepted.accepted_at)
        return response

    async def GetSend(
        self, request: messages_pb2.GetSendRequest, context: Context
    ) -> messages_pb2.GetSendResponse:
        """One send's scheduler record: pending, deferred, dropped or handed over."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        which = request.WhichOneof("key")
        if which is None:
            problems.add("key", "required: send_id or idempotency_key")
        elif which == "send_id":
            problems.caller_id("send_id", request.send_id)
        else:
            problems.caller_id("idempotency_key", request.idempotency_key)
        problems.raise_if_any()
        record = await self._sends.get(
            request.app_id, send_id=request.send_id, idempotency_key=request.idempotency_key
        )
        return messages_pb2.GetSendResponse(
            record=contact_record(record, include_trace=request.include_trace)
        )

    async def ExportUserData(
        self, request: messages_pb2.ExportUserDataRequest, context: Context
    ) -> messages_pb2.ExportUserDataResponse:
        """What the scheduler holds about a user (intents, contacts), paged."""
        require_app(request.app_id)
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        size = problems.page_size("page_size", request.page_size, maximum=MAX_EXPORT_PAGE)
        if request.page_size == 0:
            size = DEFAULT_EXPORT_PAGE
        filters = {"user": request.user_id}
        cursor = decode_page_token(request.page_token, filters, problems)
        problems.raise_if_any()
        after = (datetime.fromisoformat(cursor.after[0]), cursor.after[1]) if cursor else None
        now, rows = await self._sends.export(request.app_id, request.user_id, after, size + 1)
        response = messages_pb2.ExportUserDataResponse(
            contacts=[contact_record(record, include_trace=False) for _, record in rows[:size]]
        )
        response.exported_at.FromDatetime(now)
        if len(rows) > size:
            created, record = rows[size - 1]
            response.next_page_token = encode_page_token(
                (created.isoformat(), record.send_id), filters
            )
        return response


def contact_record(record: IntentRecord, *, include_trace: bool) -> resources_pb2.ContactRecord:
    """An intent as the contract's ContactRecord."""
    proto = resources_pb2.ContactRecord(
        send_id=record.send_id,
        campaign_id=record.campaign_id or "",
        trigger_id=record.trigger_id or "",
        category_id=record.category_id,
        variant_id=record.variant_id,
        user_id=record.user_id,
        holdout=record.holdout,
        event_id=record.event_id,
        idempotency_key=record.idempotency_key or "",
    )
    if record.decision is not None:
        proto.decision.MergeFromString(record.decision)
        if not include_trace:
            proto.decision.ClearField("trace")
    elif record.outcome is not None:
        proto.decision.outcome = _OUTCOMES[record.outcome]
        proto.decision.reason = decision_pb2.ReasonCode.ValueType(record.reason)
    if record.state is IntentState.DROPPED:
        # A drop after the decision (delivery refused the send) overrides what it said.
        proto.decision.outcome = decision_pb2.OUTCOME_DROP
        proto.decision.reason = decision_pb2.ReasonCode.ValueType(record.reason)
    proto.due_at.FromDatetime(record.due_at)
    if record.sent_at is not None:
        proto.sent_at.FromDatetime(record.sent_at)
    return proto
